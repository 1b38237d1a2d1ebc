"""Loop 1: optimises a game's memory structure; keeps only revisions that win on selection seeds.

  python -m experiments.optimize_structure --workdir=runs/loop1     # embedded default, CPU
  python -m experiments.optimize_structure \
      --config=experiments/configs/optimize_structure.py:full,proposer=reviewer,api=anthropic \
      --config.eval.llm.base_url=http://127.0.0.1:30000 --workdir=runs/loop1_crafter
  python -m experiments.optimize_structure \
      --config=experiments/configs/optimize_structure.py:calibrate --workdir=runs/loop1_aa

Re-running with the same --workdir resumes: finished episodes and reviewer calls are kept.
"""

from __future__ import annotations

import json
import os

from absl import app, flags
from ml_collections import config_flags

from automem.rollout.evaluate import start_job
from automem.structure import optimize_structure
from automem.utils import parse_flags, reports_errors

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "optimize_structure.py"),
    "Loop 1 config (experiments/configs/optimize_structure.py[:variant]).", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory (default runs/loop1-<UTC timestamp>); an existing one resumes.")


@reports_errors
def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  workdir = start_job(config, config.eval, _WORKDIR.value, "loop1")
  summary = optimize_structure(config, workdir)
  if "final" in summary:
    print(summary["final"]["text"])
  if "calibration" in summary:
    print(json.dumps(summary["calibration"], indent=1))
  print(f"accepted: {', '.join(summary['accepted'])}; episodes: {summary['episodes']}")
  print(f"run directory: {os.path.abspath(workdir)}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
