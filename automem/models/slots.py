"""Host-side bookkeeping of the engine's KV slots: which tokens each slot holds, and reuse.

The engine keeps one KV row per slot. A finished request leaves its tokens (prompt plus
the completion tokens it fed back) in its slot; the next request whose prompt starts with
the same tokens, under the same adapter, takes that slot and prefills only the rest. The
agent's episodes ask again and again with prompts that extend their previous one, so an
idle slot is, in effect, one episode's KV. Memory is bounded by the slot count; a request
that continues no slot evicts the least recently used idle one.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Slot:
  """One KV row: the tokens whose keys/values it holds (positions 0..len-1)."""

  tokens: np.ndarray  # int32 [len]
  adapter: str | None = None
  last_used: int = 0
  busy: bool = False


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
  """Length of the longest common prefix of two token arrays."""
  n = min(len(a), len(b))
  if n == 0:
    return 0
  diff = np.flatnonzero(a[:n] != b[:n])
  return int(diff[0]) if diff.size else n


class SlotTable:
  """Assigns requests to slots, preferring a slot whose tokens the prompt continues.

  Args:
    num_slots: KV rows the engine holds.
    reuse: match prompts against slot contents (False: every request starts from 0).
    min_continue: a slot counts as "continued" when the match covers at least this fraction
      of its tokens; otherwise the least recently used idle slot is taken (so a new episode
      sharing only a system prompt does not evict another episode's long history).
  """

  def __init__(self, num_slots: int, *, reuse: bool = True, min_continue: float = 0.5):
    if num_slots < 1:
      raise ValueError(f"num_slots must be >= 1, got {num_slots}")
    self.slots = [Slot(np.zeros((0,), np.int32)) for _ in range(num_slots)]
    self.reuse = reuse
    self.min_continue = min_continue
    self._clock = 0

  @property
  def num_free(self) -> int:
    return sum(not s.busy for s in self.slots)

  def acquire(self, prompt: np.ndarray, adapter: str | None) -> tuple[int, int]:
    """(slot, reused tokens) for a prompt; at least one prompt token is left to compute."""
    idle = [i for i, s in enumerate(self.slots) if not s.busy]
    if not idle:
      raise RuntimeError("no free KV slot")
    best, best_len = -1, 0
    if self.reuse:
      for i in idle:
        s = self.slots[i]
        if s.adapter != adapter or not len(s.tokens):
          continue
        m = common_prefix(s.tokens, prompt)
        if m >= self.min_continue * len(s.tokens) and m > best_len:
          best, best_len = i, m
    if best < 0:
      best = min(idle, key=lambda i: self.slots[i].last_used)
      s = self.slots[best]
      best_len = common_prefix(s.tokens, prompt) if self.reuse and s.adapter == adapter else 0
    reused = min(best_len, len(prompt) - 1)
    s = self.slots[best]
    s.busy, s.adapter = True, adapter
    s.tokens = s.tokens[:reused]
    self.touch(best)
    return best, reused

  def release(self, slot: int, tokens: np.ndarray) -> None:
    """The slot is idle again and holds the KV of `tokens`."""
    s = self.slots[slot]
    s.busy = False
    s.tokens = np.asarray(tokens, np.int32)
    self.touch(slot)

  def touch(self, slot: int) -> None:
    self._clock += 1
    self.slots[slot].last_used = self._clock

  def forget(self, adapter: str | None = None, *, everything: bool = False) -> None:
    """Drops idle contents (of one adapter, or all): their KV no longer matches the weights."""
    for s in self.slots:
      if everything or s.adapter == adapter:
        s.tokens = np.zeros((0,), np.int32)
