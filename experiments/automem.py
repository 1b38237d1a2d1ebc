"""The AutoMem pipeline end to end: v0, Loop 1, Loop 2, final, report (one workdir).

  python -m experiments.automem --workdir=runs/automem
  python -m experiments.automem --config=experiments/configs/automem.py:paper --workdir=...

Re-running with the same --workdir resumes: finished stages are kept.
"""

from __future__ import annotations

import os

from absl import app, flags
from ml_collections import config_flags

from automem.pipeline import run_pipeline
from automem.rollout.evaluate import start_job
from automem.utils import parse_flags, reports_errors

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "automem.py"),
    "Pipeline config (experiments/configs/automem.py[:variant]).", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Pipeline workdir (default runs/automem-<UTC timestamp>); an existing one "
    "resumes.")


@reports_errors
def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  workdir = start_job(config, config.eval, _WORKDIR.value, "automem")
  results = run_pipeline(config, workdir)
  for stage, summary in results.items():
    print(f"{stage:<8} {'skipped' if summary.get('skipped') else 'done'}")
  report = results.get("report", {}).get("report")
  if report:
    print(f"report: {os.path.abspath(report)}")
  print(f"workdir: {os.path.abspath(workdir)}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
