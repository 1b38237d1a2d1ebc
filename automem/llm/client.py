"""The backend-neutral async client: concurrency limit, timeouts, retries, usage.

A backend implements `_call(requests) -> results` for one group of requests
(one HTTP call, or one engine submission) and raises `LLMCallError` on a
failed attempt; everything else -- how many calls run at once, how long one
may take, what is retried and how often, and the usage record -- lives here,
so all backends behave the same under faults.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import random
import time
from collections.abc import Sequence

from absl import logging

from automem.llm.retry import LLMCallError, RetryPolicy
from automem.llm.types import LLMRequest, LLMResult
from automem.llm.usage import UsageTracker


class LLMClient(abc.ABC):
  """`await client.generate(requests)` -> one `LLMResult` per request, in order.

  Never raises for a failed request: the result carries `error` and
  `error_cause`. Use as `async with client:` or call `start()` / `close()`;
  `generate` starts the client lazily.
  """

  backend: str = "abstract"
  supports_tools: bool = False  # whether requests may offer tools (tool calling)

  def __init__(self, *, concurrency: int = 64, timeout_s: float = 120.0,
               retry: RetryPolicy | None = None, seed: int | None = None):
    if concurrency < 1:
      raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if timeout_s <= 0:
      raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    self.concurrency = concurrency
    self.timeout_s = timeout_s
    self.retry = retry or RetryPolicy()
    self.usage = UsageTracker()
    self._rng = random.Random(seed)
    self._sem: asyncio.Semaphore | None = None
    self._sem_loop: asyncio.AbstractEventLoop | None = None
    self._started = False
    self._start_lock: asyncio.Lock | None = None

  # -- lifecycle ---------------------------------------------------------------

  async def start(self) -> None:
    """Connects / loads and checks the backend; idempotent."""
    loop = asyncio.get_running_loop()
    if self._start_lock is None or self._sem_loop is not loop:
      self._start_lock = asyncio.Lock()
      self._sem = asyncio.Semaphore(self.concurrency)
      self._sem_loop = loop
      self._started = False
    async with self._start_lock:
      if not self._started:
        try:
          await self._start()
        except BaseException:
          await self._close()  # release what a half-finished start-up opened
          raise
        self._started = True

  async def close(self) -> None:
    if self._started:
      self._started = False
      await self._close()

  async def __aenter__(self) -> LLMClient:
    await self.start()
    return self

  async def __aexit__(self, *exc) -> None:
    await self.close()

  async def _start(self) -> None:  # noqa: B027 -- optional hook
    """Backend start-up (open sessions, health checks, load engines)."""

  async def _close(self) -> None:  # noqa: B027 -- optional hook
    """Backend shutdown."""

  # -- generation --------------------------------------------------------------

  async def generate(self, requests: Sequence[LLMRequest]) -> list[LLMResult]:
    """Runs every request concurrently (bounded by `concurrency`); results in input order."""
    requests = list(requests)
    for r in requests:
      if not isinstance(r, LLMRequest):
        raise TypeError(f"generate() takes LLMRequest objects, got {type(r).__name__}")
    if not requests:
      return []
    await self.start()
    if not self.supports_tools and any(r.tools for r in requests):
      results = [LLMResult.failure("unsupported", f"the {self.backend} backend has no tool "
                                   "calling; use an OpenAI-compatible or Anthropic endpoint")
                 if r.tools else None for r in requests]
      for res in results:
        if res is not None:
          self.usage.record(res)
      rest = [r for r in requests if not r.tools]
      done = iter(await self.generate(rest) if rest else [])
      return [res if res is not None else next(done) for res in results]
    groups = self._group(requests)
    outputs = await asyncio.gather(*(self._run_group([requests[i] for i in g]) for g in groups))
    results: list[LLMResult | None] = [None] * len(requests)
    for group, out in zip(groups, outputs, strict=True):
      for i, res in zip(group, out, strict=True):
        results[i] = res
    for res in results:
      self.usage.record(res)
    return results  # type: ignore[return-value]

  async def generate_one(self, request: LLMRequest) -> LLMResult:
    return (await self.generate([request]))[0]

  def generate_sync(self, requests: Sequence[LLMRequest]) -> list[LLMResult]:
    """Blocking convenience for scripts and notebooks (runs its own event loop)."""

    async def run():
      try:
        return await self.generate(requests)
      finally:
        await self.close()

    return asyncio.run(run())

  def _group(self, requests: list[LLMRequest]) -> list[list[int]]:
    """Index groups sent in one backend call; one request per call by default."""
    return [[i] for i in range(len(requests))]

  async def _run_group(self, requests: list[LLMRequest]) -> list[LLMResult]:
    assert self._sem is not None
    t0 = time.perf_counter()
    attempt = 0
    while True:
      try:
        async with self._sem:
          async with asyncio.timeout(self.timeout_s):
            results = await self._call(requests)
        if len(results) != len(requests):
          raise LLMCallError("bad_response",
                             f"backend returned {len(results)} results for {len(requests)} requests")
        latency = time.perf_counter() - t0
        return [dataclasses.replace(r, latency_s=latency, attempts=attempt + 1) for r in results]
      except TimeoutError:
        err = LLMCallError("timeout", f"no response within {self.timeout_s:g} s")
      except LLMCallError as e:
        err = e
      except asyncio.CancelledError:
        raise
      except Exception as e:  # a backend bug must still not kill the episode loop
        logging.exception("LLM backend %s raised", self.backend)
        err = LLMCallError("engine", f"{type(e).__name__}: {e}")
      if not err.retryable or attempt >= self.retry.max_retries:
        latency = time.perf_counter() - t0
        suffix = f" (after {attempt + 1} attempts)" if attempt else ""
        logging.warning("LLM %s request failed: %s: %s%s", self.backend, err.cause, err.message,
                        suffix)
        return [LLMResult.failure(err.cause, err.message + suffix, latency_s=latency,
                                  attempts=attempt + 1) for _ in requests]
      delay = self.retry.delay_s(attempt, err, self._rng)
      logging.info("LLM %s attempt %d failed (%s: %s); retrying in %.2f s", self.backend,
                   attempt + 1, err.cause, err.message, delay)
      await asyncio.sleep(delay)
      attempt += 1

  @abc.abstractmethod
  async def _call(self, requests: list[LLMRequest]) -> list[LLMResult]:
    """One attempt for a group; raises `LLMCallError` on failure."""
