"""Retry policy: which failures are worth another attempt, and how long to wait.

Connection errors, timeouts, HTTP 429 and 5xx are transient and retried with
exponential backoff and full jitter (AWS architecture blog's "full jitter":
sleep uniform(0, min(cap, base * 2**attempt))); a server's Retry-After is
honoured as a lower bound. Other 4xx and malformed responses that a retry
cannot fix are returned at once.
"""

from __future__ import annotations

import dataclasses
import email.utils
import random
import time


class LLMCallError(Exception):
  """A failed attempt, classified by `cause` (one of `types.ERROR_CAUSES`)."""

  def __init__(self, cause: str, message: str, *, retry_after_s: float | None = None,
               status: int | None = None):
    super().__init__(message)
    self.cause = cause
    self.message = message
    self.retry_after_s = retry_after_s
    self.status = status

  @property
  def retryable(self) -> bool:
    return self.cause in RETRYABLE_CAUSES


# "bad_response" is retried: a truncated body usually means a connection dropped
# mid-response, which a second attempt fixes; a server that always answers garbage
# costs `max_retries` extra attempts, which the retry budget bounds.
RETRYABLE_CAUSES = frozenset({"connection", "timeout", "rate_limited", "server_error",
                              "bad_response"})


class LLMServerUnavailable(RuntimeError):
  """Raised at start-up (never per request) when a server is not there or serves another model."""


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
  """Retry budget and backoff schedule for one request."""

  max_retries: int = 4  # extra attempts after the first
  backoff_base_s: float = 0.5  # first backoff cap; doubles per attempt
  backoff_max_s: float = 20.0  # cap on one backoff sleep
  max_retry_after_s: float = 60.0  # cap on a server's Retry-After

  def __post_init__(self):
    if self.max_retries < 0:
      raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
    if self.backoff_base_s < 0 or self.backoff_max_s < 0:
      raise ValueError("backoff times must be >= 0")

  def delay_s(self, attempt: int, error: LLMCallError, rng: random.Random) -> float:
    """Seconds to sleep after failed attempt number `attempt` (0-based)."""
    cap = min(self.backoff_max_s, self.backoff_base_s * (2.0**attempt))
    delay = rng.uniform(0.0, cap)
    if error.retry_after_s is not None:
      delay = max(delay, min(error.retry_after_s, self.max_retry_after_s))
    return delay


def parse_retry_after(value: str | None) -> float | None:
  """Seconds from a Retry-After header: delta-seconds (fractions accepted) or an HTTP date."""
  if not value:
    return None
  value = value.strip()
  try:
    return max(0.0, float(value))
  except ValueError:
    pass
  try:
    when = email.utils.parsedate_to_datetime(value)
  except (TypeError, ValueError):
    return None
  if when is None:
    return None
  return max(0.0, when.timestamp() - time.time())


def classify_status(status: int, body: str, retry_after: str | None = None) -> LLMCallError:
  """The error for a non-2xx HTTP status."""
  snippet = body.strip().replace("\n", " ")[:300]
  if status == 429:
    return LLMCallError("rate_limited", f"HTTP 429 Too Many Requests: {snippet}",
                        retry_after_s=parse_retry_after(retry_after), status=status)
  if status >= 500:
    return LLMCallError("server_error", f"HTTP {status}: {snippet}",
                        retry_after_s=parse_retry_after(retry_after), status=status)
  return LLMCallError("client_error", f"HTTP {status}: {snippet}", status=status)
