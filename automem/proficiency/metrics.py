"""Metrics of a run: `metrics.jsonl` lines and TensorBoard events, written by process 0 only."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

import jax

from automem.utils.files import tmp_path


class MetricsWriter:
  """Appends `{"step", "split", ...}` lines to `metrics.jsonl` and scalars to TensorBoard."""

  def __init__(self, workdir: str, *, tensorboard: bool = True):
    self.active = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if self.active:
      os.makedirs(workdir, exist_ok=True)
      if tensorboard:
        from tensorboardX import SummaryWriter

        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def truncate_after(self, step: int) -> int:
    """Drops lines past `step` (a resumed run replays them); returns how many went.

    A run killed after its last checkpoint logged steps it will log again once
    restored there; without this the file would hold those steps twice. A
    torn last line of a killed run goes too.
    """
    if not self.active or not os.path.exists(self.path):
      return 0
    with open(self.path, encoding="utf-8") as f:
      lines = f.readlines()
    keep = []
    for line in lines:
      try:
        if line.endswith("\n") and int(json.loads(line)["step"]) <= step:
          keep.append(line)
      except (ValueError, KeyError, TypeError):
        continue
    if len(keep) == len(lines):
      return 0
    tmp = tmp_path(self.path)
    with open(tmp, "w", encoding="utf-8") as f:
      f.writelines(keep)
    os.replace(tmp, self.path)
    return len(lines) - len(keep)

  def write(self, step: int, split: str, values: Mapping[str, Any]) -> None:
    if not self.active:
      return
    clean = {k: float(v) for k, v in values.items()}
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": step, "split": split, **{
          k: (v if math.isfinite(v) else str(v)) for k, v in clean.items()}}) + "\n")
    if self._tb is not None:
      for k, v in clean.items():
        self._tb.add_scalar(f"{split}/{k}", v, step)

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """All lines of a run's `metrics.jsonl` (empty when there is none)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class PhaseTimer:
  """Seconds spent per phase (data, step, eval, checkpoint, ...), for the run summary."""

  def __init__(self):
    self.totals: dict[str, float] = {}

  @contextlib.contextmanager
  def __call__(self, name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
      yield
    finally:
      self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - t0

  def summary(self) -> dict[str, float]:
    return {f"time_{k}_s": round(v, 4) for k, v in sorted(self.totals.items())}
