"""Shared HTTP plumbing: one aiohttp session per client, failures classified."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from automem.llm.client import LLMClient
from automem.llm.retry import LLMCallError, classify_status


class HttpClient(LLMClient):
  """An `LLMClient` that talks JSON over HTTP to `base_url`."""

  def __init__(self, base_url: str, *, api_key: str | None = None, **kwargs):
    super().__init__(**kwargs)
    if not base_url.startswith(("http://", "https://")):
      raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
    self.base_url = base_url.rstrip("/")
    self.api_key = api_key or None
    self._session: aiohttp.ClientSession | None = None
    self._session_loop: asyncio.AbstractEventLoop | None = None

  @property
  def headers(self) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if self.api_key:
      headers["Authorization"] = f"Bearer {self.api_key}"
    return headers

  async def _open_session(self) -> aiohttp.ClientSession:
    loop = asyncio.get_running_loop()
    if self._session is not None and self._session_loop is not loop:
      # A session is bound to the loop that made it; after `asyncio.run` returned, that
      # loop is gone and its sockets with it, so start afresh.
      self._session = None
    if self._session is None or self._session.closed:
      self._session_loop = loop
      # Connection pool as large as the concurrency limit; timeouts are enforced by
      # LLMClient per attempt, so the session's own total timeout is off.
      connector = aiohttp.TCPConnector(limit=self.concurrency)
      self._session = aiohttp.ClientSession(
          connector=connector, timeout=aiohttp.ClientTimeout(total=None),
          headers=self.headers)
    return self._session

  async def _start(self) -> None:
    await self._open_session()

  async def _close(self) -> None:
    session, self._session = self._session, None
    if session is not None and self._session_loop is asyncio.get_running_loop():
      await session.close()

  async def _request_json(self, method: str, path: str, payload: Any = None, *,
                          timeout_s: float | None = None) -> Any:
    """One HTTP exchange; returns the decoded JSON body or raises `LLMCallError`."""
    session = await self._open_session()
    url = self.base_url + path
    timeout = aiohttp.ClientTimeout(total=timeout_s) if timeout_s else None
    try:
      async with session.request(method, url, json=payload, timeout=timeout) as resp:
        body = await resp.read()
        if resp.status >= 300:
          text = body.decode("utf-8", errors="replace")
          raise classify_status(resp.status, text, resp.headers.get("Retry-After"))
    except LLMCallError:
      raise
    except aiohttp.ClientPayloadError as e:
      raise LLMCallError("bad_response", f"truncated response from {url}: {e}") from e
    except (aiohttp.ClientConnectionError, aiohttp.ClientOSError, ConnectionError) as e:
      raise LLMCallError("connection", f"{url}: {type(e).__name__}: {e}") from e
    except TimeoutError as e:
      raise LLMCallError("timeout", f"{url}: timed out") from e
    except aiohttp.ClientResponseError as e:
      raise LLMCallError("bad_response", f"{url}: {e}") from e
    try:
      return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      snippet = body[:200].decode("utf-8", errors="replace")
      raise LLMCallError("bad_response",
                         f"malformed JSON from {url}: {e}; body starts {snippet!r}") from e


def require(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
  """`obj[key]` checked for type; a `bad_response` error naming the field otherwise."""
  if not isinstance(obj, dict) or key not in obj:
    raise LLMCallError("bad_response", f"{where}: missing field {key!r}")
  value = obj[key]
  if not isinstance(value, kind):
    raise LLMCallError("bad_response",
                       f"{where}: field {key!r} has type {type(value).__name__}")
  return value


def int_field(obj: Any, key: str, default: int = 0) -> int:
  """An optional integer field (None / missing -> default)."""
  if not isinstance(obj, dict):
    return default
  value = obj.get(key)
  return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else default
