"""Several servers of one model behind one client: requests spread over them, dead ones out.

`MultiEndpointClient` wraps one backend client per server (SGLang servers of
the same checkpoint, `llm.sglang.endpoints`). Each request group goes to the
live endpoint with the fewest groups in flight (ties in turn), so load follows
the servers' speed. A connection failure takes that endpoint out for
`revive_after_s` and the group goes at once to the next live endpoint; other
failures (timeouts, 5xx, bad answers) are retried by the usual policy. An
endpoint that does not come up at start-up is out from the start; the client
fails to start only when none does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from absl import logging

from automem.llm.client import LLMClient
from automem.llm.retry import LLMCallError, LLMServerUnavailable
from automem.llm.types import LLMRequest, LLMResult


class MultiEndpointClient(LLMClient):
  """One client over `endpoints` (backend clients of the same model).

  Args:
    endpoints: the per-server clients; they are started here and called one
      attempt at a time (this client's concurrency, timeout and retry apply).
    revive_after_s: how long an endpoint that refused a connection stays out.
    restart_timeout_s: how long a request waits for an endpoint that was down at
      start-up to come up when it is tried again.
    **kwargs: `LLMClient` settings (concurrency, timeout_s, retry, seed).
  """

  def __init__(self, endpoints: Sequence[LLMClient], *, revive_after_s: float = 60.0,
               restart_timeout_s: float = 5.0, **kwargs):
    super().__init__(**kwargs)
    if not endpoints:
      raise ValueError("MultiEndpointClient needs at least one endpoint")
    self.endpoints = list(endpoints)
    self.backend = self.endpoints[0].backend
    self.supports_tools = all(e.supports_tools for e in self.endpoints)
    self.revive_after_s = revive_after_s
    self.restart_timeout_s = restart_timeout_s
    self._out_until = [0.0] * len(self.endpoints)
    self._in_flight = [0] * len(self.endpoints)
    self._turn = 0

  def live(self) -> list[int]:
    """Indices of the endpoints currently in use."""
    now = time.monotonic()
    return [i for i, t in enumerate(self._out_until) if t <= now]

  def _take_out(self, i: int, why: str) -> None:
    self._out_until[i] = time.monotonic() + self.revive_after_s
    logging.warning("LLM endpoint %s taken out for %.0f s: %s",
                    getattr(self.endpoints[i], "base_url", i), self.revive_after_s, why)

  async def _start(self) -> None:
    outs = await asyncio.gather(*(e.start() for e in self.endpoints), return_exceptions=True)
    errors = []
    for i, out in enumerate(outs):
      if isinstance(out, BaseException):
        if not isinstance(out, Exception):
          raise out
        errors.append(f"{type(out).__name__}: {out}")
        self._take_out(i, str(out))
    if len(errors) == len(self.endpoints):
      raise LLMServerUnavailable("no LLM endpoint is up:\n  " + "\n  ".join(errors))

  async def _close(self) -> None:
    await asyncio.gather(*(e.close() for e in self.endpoints))

  def _group(self, requests: list[LLMRequest]) -> list[list[int]]:
    return self.endpoints[0]._group(requests)

  def _pick(self, tried: set[int]) -> int | None:
    live = [i for i in self.live() if i not in tried]
    if not live:
      return None
    n = len(self.endpoints)
    best = min(live, key=lambda i: (self._in_flight[i], (i - self._turn) % n))
    self._turn = (best + 1) % n
    return best

  async def _call(self, requests: list[LLMRequest]) -> list[LLMResult]:
    tried: set[int] = set()
    while True:
      i = self._pick(tried)
      if i is None:
        raise LLMCallError("connection", f"no live LLM endpoint (tried {len(tried)}; "
                           f"{len(self.endpoints) - len(self.live())} taken out)")
      tried.add(i)
      endpoint = self.endpoints[i]
      self._in_flight[i] += 1
      try:
        if not getattr(endpoint, "_started", True):
          async with asyncio.timeout(self.restart_timeout_s):
            await endpoint.start()  # one that was down at start-up, tried again
        return await endpoint._call(requests)
      except (LLMServerUnavailable, TimeoutError) as e:
        self._take_out(i, f"{type(e).__name__}: {e}")
      except LLMCallError as e:
        if e.cause != "connection":
          raise
        self._take_out(i, e.message)
      finally:
        self._in_flight[i] -= 1
