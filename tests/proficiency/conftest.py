"""Shared tiny fixtures for the proficiency tests: base model, trajectories, packed dataset."""

from __future__ import annotations

import pytest

from automem.models.tiny import make_tiny_checkpoint
from automem.proficiency import dataset, selection, synthetic


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> str:
  """A tiny random Qwen2 checkpoint (untied head, as the default config's tiny model)."""
  return make_tiny_checkpoint(str(tmp_path_factory.mktemp("prof_base") / "base"), "qwen2",
                              tie_word_embeddings=False)


@pytest.fixture(scope="session")
def chat_tok(tiny_base) -> dataset.ModelChatTokenizer:
  return dataset.ModelChatTokenizer.from_pretrained(tiny_base)


@pytest.fixture(scope="session")
def synth_run(tmp_path_factory) -> str:
  """A run dir with 12 synthetic episodes of 6 LOG (+ 6 PLAN) turns."""
  out = str(tmp_path_factory.mktemp("prof_synth"))
  synthetic.write_synthetic_trajectories(out, num_episodes=12, steps=6, seed=0)
  return out


@pytest.fixture(scope="session")
def packed(tmp_path_factory, synth_run, chat_tok) -> tuple[str, dict]:
  """The synthetic set packed into 128-token rows: (dataset dir, stats)."""
  out = str(tmp_path_factory.mktemp("prof_data"))
  turns = selection.load_turns(selection.select_log_turns(synth_run))
  _, stats = dataset.build_dataset(turns, chat_tok, dataset.DatasetConfig(
      row_length=128, val_fraction=0.2, seed=0), out)
  return out, stats
