"""Evaluates the LOG/PLAN memory agent: episodes of every configured game into a run dir.

  python -m experiments.evaluate                      # embedded default, CPU, a few minutes
  python -m experiments.evaluate --config=experiments/configs/evaluate.py:full \
      --config.llm.base_url=http://127.0.0.1:30000 --workdir=runs/eval_32b

Re-running with the same --workdir resumes: finished episodes are kept, episodes
that ended in an infrastructure error are played again (unless --config.keep_errored).
Exit status: 0 done, 2 bad input (one line naming the field or file), 3 stopped
early because an LLM server stayed unreachable (rerun to resume).
"""

from __future__ import annotations

import os
import platform
import time

from absl import app, flags, logging
from ml_collections import config_flags

from automem.models.tiny import local_compile_cache
from automem.rollout.evaluate import check_model_fits, evaluate, open_run_dir, validate_config
from automem.utils import parse_flags, reports_errors

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "evaluate.py"),
    "Evaluation config (experiments/configs/evaluate.py[:variant]).", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory (default runs/eval-<UTC timestamp>); an existing one resumes.")


@reports_errors
def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  workdir = _WORKDIR.value or os.path.join("runs", time.strftime("eval-%Y%m%d-%H%M%S", time.gmtime()))
  validate_config(config)  # bad input is one line, before the config dump
  check_model_fits(config)  # the tiny offline model with uncapped prompts, likewise
  open_run_dir(workdir)
  logging.info("python %s on %s; workdir %s", platform.python_version(), platform.node(), workdir)
  logging.info("config:\n%s", config)
  if config.llm.backend == "local":
    local_compile_cache()
  evaluate(config, workdir)  # logs the summary table
  print(f"run directory: {os.path.abspath(workdir)}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
