"""Orbax checkpoints of a training run: named items, async saves, keep N, save on preemption.

A checkpoint at step `s` holds `params` (the trainable parameters as a pure
dict: LoRA adapters, or every weight in full fine-tuning), `optimizer` (the
optax state) and `data` (step and data position, JSON). Frozen base weights
are not saved: they come back from the base checkpoint. Restores go straight
into the sharded abstract state, so no host ever holds a full copy.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

ITEMS = ("params", "optimizer", "data")


class Checkpointer:
  """A thin wrapper over `ocp.CheckpointManager` with this trainer's items."""

  def __init__(self, directory: str, *, max_to_keep: int = 3, save_every: int = 100,
               async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self.save_every = max(1, save_every)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            enable_async_checkpointing=async_save, create=True),
        item_names=ITEMS)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, params: Any, opt_state: Any, data: dict[str, Any], *,
           force: bool = False) -> bool:
    """Starts a save when `step` is due (or `force`); returns whether one was started."""
    if (not force and step % self.save_every) or step in self.manager.all_steps():
      return False
    return self.manager.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(params), optimizer=ocp.args.StandardSave(opt_state),
        data=ocp.args.JsonSave(data)), force=True)

  def restore(self, step: int, abstract_params: Any, abstract_opt_state: Any
              ) -> tuple[Any, Any, dict[str, Any]]:
    """Restores into the given abstract trees (`jax.ShapeDtypeStruct`s with shardings)."""
    out = self.manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_params),
        optimizer=ocp.args.StandardRestore(abstract_opt_state),
        data=ocp.args.JsonRestore()))
    return out["params"], out["optimizer"], dict(out["data"])

  def reached_preemption(self, step: int) -> bool:
    """The multi-host preemption sync point (jax's coordinator saw a SIGTERM somewhere)."""
    return jax.process_count() > 1 and self.manager.reached_preemption(step)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


@dataclasses.dataclass
class PreemptionFlag:
  """Turns SIGTERM into a flag the train loop polls, so it can save and exit cleanly.

  Installed only in single-process runs: in multi-host runs jax's preemption
  service handles the signal and `Checkpointer.reached_preemption` agrees on
  the step across processes.
  """

  signals: tuple[int, ...] = (signal.SIGTERM,)
  raised: bool = False
  _previous: dict[int, Any] = dataclasses.field(default_factory=dict)

  def __enter__(self) -> PreemptionFlag:
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      for s in self.signals:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def _handle(self, signum: int, frame: Any) -> None:
    del frame
    logging.warning("received signal %d: saving a checkpoint and stopping", signum)
    self.raised = True

  def __exit__(self, *exc: Any) -> None:
    for s, h in self._previous.items():
      signal.signal(s, h)
    self._previous.clear()
