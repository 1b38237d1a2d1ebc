"""Bad training input is an `InputError` naming the field or file, before anything runs."""

from __future__ import annotations

import pytest

from automem.proficiency.run import check_config
from automem.utils import InputError
from experiments.configs import train_proficiency


@pytest.mark.parametrize("field, value, message", [
    ("steps", 0, r"config.steps: must be a whole number >= 1, got 0"),
    ("batch.accum_steps", -1, r"config.batch.accum_steps: must be a whole number >= 1"),
    ("checkpoint.every", 0, r"config.checkpoint.every: must be"),
    ("finetune", "qlora", r"config.finetune: must be 'lora' or 'full'"),
    ("data.val_fraction", 1.0, r"config.data.val_fraction: must be in \[0, 1\)"),
    ("model.checkpoint", "/no/such/ckpt", r"config.model.checkpoint: /no/such/ckpt is not a"),
    ("data.selection", "/no/such.jsonl", r"config.data.selection: /no/such.jsonl: no such file"),
    ("data.trajectories", "/no/run", r"config.data.trajectories: /no/run: no such file"),
])
def test_bad_training_config_names_its_field(field, value, message):
  config = train_proficiency.get_config()
  check_config(config)  # the shipped default passes
  node = config
  *parents, leaf = field.split(".")
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(InputError, match=message):
    check_config(config)
