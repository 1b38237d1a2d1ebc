"""Loop 2: fine-tune the memory specialist on memory-command tokens (masked SFT, LoRA or full).

  python -m experiments.train_proficiency \
      --config=experiments/configs/train_proficiency.py --workdir=runs/prof_tiny

Re-running with the same --workdir resumes from its last checkpoint. See the
config file for variants (full fine-tuning, a real base model, a selection file).
Bad input (a field out of range, a missing checkpoint or selection file, an
unwritable workdir) is one line naming it, exit status 2.
"""

from __future__ import annotations

import json

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from automem.proficiency import initialize_distributed, train
from automem.proficiency.run import check_config
from automem.utils import parse_flags, reports_errors

_CONFIG = config_flags.DEFINE_config_file(
    "config", "experiments/configs/train_proficiency.py", "Training config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (created; resumed if it exists).")


@reports_errors
def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  check_config(_CONFIG.value)  # bad input is one line, before the config dump
  initialize_distributed(_CONFIG.value.distributed)  # before anything touches the backend
  logging.info("jax %s, backend %s, %d devices", jax.__version__, jax.default_backend(),
               jax.device_count())
  logging.info("config:\n%s", _CONFIG.value)
  summary = train(_CONFIG.value, _WORKDIR.value)
  logging.info("summary: %s", json.dumps(summary, default=str))


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  app.run(main, flags_parser=parse_flags)
