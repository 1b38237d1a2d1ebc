"""Per-run usage accounting: calls, tokens, cache hits, latency percentiles, errors."""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

import numpy as np

from automem.llm.types import LLMResult


class UsageTracker:
  """Accumulates `LLMResult`s; `summary()` is a JSON-serialisable dict.

  Thread-safe, so a client shared by several event loops or threads counts once.
  """

  def __init__(self):
    self._lock = threading.Lock()
    self.reset()

  def reset(self) -> None:
    with self._lock:
      self.calls = 0
      self.ok = 0
      self.attempts = 0
      self.prompt_tokens = 0
      self.completion_tokens = 0
      self.cached_tokens = 0
      self.errors_by_cause: collections.Counter[str] = collections.Counter()
      self.finish_reasons: collections.Counter[str] = collections.Counter()
      self._latencies: list[float] = []
      self._first: float | None = None  # monotonic start of the first recorded call
      self._last: float | None = None  # monotonic time of the last recorded result

  def record(self, result: LLMResult) -> None:
    with self._lock:
      now = time.monotonic()
      start = now - float(result.latency_s)
      self._first = start if self._first is None else min(self._first, start)
      self._last = now if self._last is None else max(self._last, now)
      self.calls += 1
      self.attempts += result.attempts
      self.finish_reasons[result.finish_reason] += 1
      self._latencies.append(float(result.latency_s))
      if result.ok:
        self.ok += 1
        self.prompt_tokens += result.prompt_tokens
        self.completion_tokens += result.completion_tokens
        self.cached_tokens += result.cached_tokens
      else:
        self.errors_by_cause[result.error_cause or "unknown"] += 1

  def summary(self) -> dict[str, Any]:
    """Totals and latency percentiles (seconds) over every recorded call."""
    with self._lock:
      lat = np.asarray(self._latencies, dtype=np.float64)
      if lat.size:
        p50, p90, p99 = (float(x) for x in np.percentile(lat, [50, 90, 99]))
        latency = {"p50": p50, "p90": p90, "p99": p99, "mean": float(lat.mean()),
                   "max": float(lat.max())}
      else:
        latency = {"p50": 0.0, "p90": 0.0, "p99": 0.0, "mean": 0.0, "max": 0.0}
      wall = (self._last - self._first) if self._first is not None else 0.0
      return {
          "calls": self.calls,
          "ok": self.ok,
          "errors": self.calls - self.ok,
          "errors_by_cause": dict(sorted(self.errors_by_cause.items())),
          "finish_reasons": dict(sorted(self.finish_reasons.items())),
          "retries": self.attempts - self.calls,
          "prompt_tokens": self.prompt_tokens,
          "completion_tokens": self.completion_tokens,
          "cached_tokens": self.cached_tokens,
          "cache_hit_rate": self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0,
          "latency_s": latency,
          "wall_s": wall,  # first call's start to last result
          "completion_tokens_per_s": self.completion_tokens / wall if wall > 0 else 0.0,
      }
