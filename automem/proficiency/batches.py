"""Deterministic, resumable, multi-host batches of packed rows.

The global batch of step `s` is a pure function of `(seed, s)`: rows are
shuffled once per epoch with a seeded permutation and cut into
`[accum_steps, micro_batch]` blocks (the remainder of an epoch is skipped).
Each process reads only the rows that land on its own devices and the global
array is assembled with `jax.make_array_from_process_local_data`, so one
process and many processes see the same numbers. The data position to
checkpoint is just the step.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from jax.sharding import NamedSharding

from automem.proficiency.dataset import FIELDS


@dataclasses.dataclass(frozen=True)
class DataPosition:
  """Where the stream stands; saved with checkpoints."""

  step: int
  epoch: int
  batch_in_epoch: int
  seed: int


def _local_range(sharding: NamedSharding, global_shape: tuple[int, ...], axis: int
                 ) -> tuple[int, int]:
  """The contiguous slice of `axis` that this process's devices hold."""
  idx = sharding.addressable_devices_indices_map(global_shape).values()
  starts = [s[axis].start or 0 for s in idx]
  stops = [global_shape[axis] if s[axis].stop is None else s[axis].stop for s in idx]
  lo, hi = min(starts), max(stops)
  covered = sorted({(a, b) for a, b in zip(starts, stops)})
  total = sum(b - a for a, b in covered)
  if total != hi - lo:
    raise ValueError("this process's batch shard is not contiguous; use a mesh whose "
                     "data axes are ordered by process")
  return lo, hi


class BatchSource:
  """Global train batches `[accum_steps, micro_batch, row_length]` for any step."""

  def __init__(self, rows: dict[str, np.ndarray], accum_steps: int, micro_batch: int,
               seed: int, sharding: NamedSharding | None = None):
    self.rows = rows
    self.n = int(rows["inputs"].shape[0])
    self.row_length = int(rows["inputs"].shape[1])
    self.accum_steps = accum_steps
    self.micro_batch = micro_batch
    self.global_batch = accum_steps * micro_batch
    self.seed = seed
    self.sharding = sharding
    if self.n < self.global_batch:
      raise ValueError(f"{self.n} packed rows cannot fill one batch of {self.global_batch} "
                       f"(accum_steps {accum_steps} x micro_batch {micro_batch}); "
                       "use a smaller batch or more data")
    self.batches_per_epoch = self.n // self.global_batch
    self.shape = (accum_steps, micro_batch, self.row_length)
    self._perm_epoch = -1
    self._perm = np.arange(0)

  def position(self, step: int) -> DataPosition:
    epoch, b = divmod(step, self.batches_per_epoch)
    return DataPosition(step=step, epoch=epoch, batch_in_epoch=b, seed=self.seed)

  def row_indices(self, step: int) -> np.ndarray:
    """Row indices `[accum_steps, micro_batch]` of the global batch of `step`."""
    pos = self.position(step)
    if pos.epoch != self._perm_epoch:
      self._perm = np.random.default_rng([self.seed, pos.epoch]).permutation(self.n)
      self._perm_epoch = pos.epoch
    b = pos.batch_in_epoch * self.global_batch
    return self._perm[b:b + self.global_batch].reshape(self.accum_steps, self.micro_batch)

  def local_batch(self, step: int) -> dict[str, np.ndarray]:
    """This process's rows of the global batch of `step` (all of it without a sharding)."""
    idx = self.row_indices(step)
    if self.sharding is not None:
      lo, hi = _local_range(self.sharding, self.shape, axis=1)
      idx = idx[:, lo:hi]
    flat = np.sort(idx.reshape(-1))  # sorted reads are kinder to memory-mapped files
    inv = np.searchsorted(flat, idx.reshape(-1))
    return {k: np.asarray(self.rows[k][flat])[inv].reshape(*idx.shape, -1) for k in FIELDS}

  def global_batch_arrays(self, step: int) -> dict[str, jax.Array]:
    """The sharded global batch of `step`, assembled from every process's rows."""
    local = self.local_batch(step)
    if self.sharding is None:
      return {k: jax.numpy.asarray(v) for k, v in local.items()}
    return {k: jax.make_array_from_process_local_data(self.sharding, v, self.shape)
            for k, v in local.items()}


def eval_batches(rows: dict[str, np.ndarray], batch: int, sharding: NamedSharding | None = None):
  """Yields every row once in `[batch, row_length]` blocks; the last is padded with weight 0."""
  n, length = rows["inputs"].shape
  shape = (batch, length)
  lo, hi = (0, batch) if sharding is None else _local_range(sharding, shape, axis=0)
  for start in range(0, n, batch):
    sl = {k: np.asarray(rows[k][start + lo:min(start + hi, n)]) for k in FIELDS}
    pad = (hi - lo) - sl["inputs"].shape[0]
    if pad:
      sl = {k: np.concatenate([v, np.zeros((pad, length), v.dtype)]) for k, v in sl.items()}
    if sharding is None:
      yield {k: jax.numpy.asarray(v) for k, v in sl.items()}
    else:
      yield {k: jax.make_array_from_process_local_data(sharding, v, shape) for k, v in sl.items()}
