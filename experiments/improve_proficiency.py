"""Loop 2: trains LoRA memory specialists on the agent's own good memory decisions and keeps one
only when the two-model agent beats the base agent on selection seeds.

  python -m experiments.improve_proficiency --workdir=runs/loop2     # embedded default, CPU
  python -m experiments.improve_proficiency \
      --config=experiments/configs/improve_proficiency.py:full,game=crafter \
      --config.eval.llm.base_url=http://127.0.0.1:30000 \
      --config.train.model.checkpoint=/models/Qwen2.5-32B-Instruct --workdir=runs/loop2_crafter

Re-running with the same --workdir resumes (episodes, selections, training checkpoints, decided
rounds are kept).
"""

from __future__ import annotations

import json
import os

from absl import app, flags
from ml_collections import config_flags

from automem.proficiency.loop import improve_proficiency
from automem.rollout.evaluate import start_job
from automem.utils import parse_flags, reports_errors

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "improve_proficiency.py"),
    "Loop 2 config (experiments/configs/improve_proficiency.py[:variant]).", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory (default runs/loop2-<UTC timestamp>); an existing one resumes.")


@reports_errors
def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  workdir = start_job(config, config.eval, _WORKDIR.value, "loop2")
  summary = improve_proficiency(config, workdir)
  print(json.dumps({k: v for k, v in summary.items() if k != "final"}, indent=1))
  if "final" in summary:
    f = summary["final"]
    print(f"final (test seeds): specialist {f['specialist']['mean']:.2f} ± "
          f"{f['specialist']['ci95']:.2f}, base {f['base']['mean']:.2f} ± {f['base']['ci95']:.2f}"
          f", paired {f['paired']['mean_gain']:+.2f} ± {f['paired']['gain_ci95']:.2f}")
  print(f"run directory: {os.path.abspath(workdir)}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
