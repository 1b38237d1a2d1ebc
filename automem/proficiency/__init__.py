"""Loop 2, memory proficiency: selected turns -> masked SFT data -> LoRA/full fine-tuning.

Public API::

  # which turns to train on (`automem.credit`, the decision selection, writes selected_turns.jsonl)
  TurnRef, read_selected_turns, write_selected_turns, select_log_turns, load_turns
  # tokens with a loss mask on memory-command tokens only, packed rows, episode split
  DatasetConfig, ModelChatTokenizer, build_dataset, load_split
  # deterministic multi-host batches; the jitted steps; the mesh-aware trainer
  BatchSource, eval_batches, OptimConfig, make_optimizer, TrainState, train_step, eval_step,
  Trainer
  # a whole job (absl entry point: experiments/train_proficiency.py)
  train(config, workdir, stop_after=None) -> summary dict
  # the loop (experiments/improve_proficiency.py; imported on first use, it pulls in the
  # agent, envs and racing): recipes, adapters served beside the base, halving, racing, ledger
  improve_proficiency(config, workdir, ...) -> summary dict, ProficiencyLoop, Recipe,
  recipe_grid, LocalAdapters, SGLangAdapters
"""

from automem.proficiency.batches import BatchSource, DataPosition, eval_batches
from automem.proficiency.checkpointing import Checkpointer, PreemptionFlag
from automem.proficiency.dataset import (
    DatasetConfig,
    ModelChatTokenizer,
    build_dataset,
    load_split,
    tokenize_turn,
)
from automem.proficiency.metrics import MetricsWriter, read_metrics
from automem.proficiency.run import initialize_distributed, train
from automem.proficiency.selection import (
    SELECTION_FILE,
    TurnRecord,
    TurnRef,
    load_turns,
    read_selected_turns,
    select_log_turns,
    write_selected_turns,
)
from automem.proficiency.steps import (
    OptimConfig,
    TrainState,
    eval_step,
    make_optimizer,
    train_step,
)
from automem.proficiency.synthetic import write_synthetic_trajectories
from automem.proficiency.trainer import Trainer

__all__ = [
    "SELECTION_FILE", "BatchSource", "Checkpointer", "DataPosition", "DatasetConfig",
    "MetricsWriter", "ModelChatTokenizer", "OptimConfig", "PreemptionFlag", "TrainState",
    "Trainer", "TurnRecord", "TurnRef", "build_dataset", "eval_batches", "eval_step",
    "initialize_distributed",    "load_split", "load_turns", "make_optimizer", "read_metrics", "read_selected_turns",
    "select_log_turns", "tokenize_turn", "train", "train_step", "write_selected_turns",
    "write_synthetic_trajectories",
]

_LAZY = {"improve_proficiency": "loop", "ProficiencyLoop": "loop", "Recipe": "recipes",
         "recipe_grid": "recipes", "LocalAdapters": "deploy", "SGLangAdapters": "deploy"}


def __getattr__(name: str):
  """The loop's names, imported on first use (the trainer alone needs none of its imports)."""
  if name in _LAZY:
    import importlib

    return getattr(importlib.import_module(f"automem.proficiency.{_LAZY[name]}"), name)
  raise AttributeError(f"module 'automem.proficiency' has no attribute {name!r}")
