"""Serving a trained specialist beside the base weights on one server.

An `AdapterHost` loads a PEFT LoRA adapter dir under a name and unloads it;
requests with `adapter=name` are then served by the base weights plus that
adapter. Two hosts:

- `LocalAdapters`: the in-process JAX engine (`LocalClient`); the adapter is
  added to the engine's shared base (`GenerationEngine.add_adapter`), or, before
  the engine is built, queued in the client's `adapter_paths`.
- `SGLangAdapters`: a running SGLang server started with `--enable-lora`
  (`/load_lora_adapter`, `/unload_lora_adapter`).

Names are fresh per candidate (`adapter_name`): prefix caches are kept per adapter name, so a
new adapter must never reuse the name of an old one.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Any, Protocol

from absl import logging

from automem.llm import LLMCallError


class AdapterHost(Protocol):
  def load(self, name: str, path: str) -> None: ...

  def unload(self, name: str) -> None: ...


def adapter_name(prefix: str, path: str) -> str:
  """`prefix` plus a digest of the adapter's files: a new name for new weights, the same name
  for the same weights (a resumed run serves what it served before)."""
  h = hashlib.sha256()
  for root, _, files in sorted(os.walk(path)):
    for f in sorted(files):
      h.update(f.encode())
      with open(os.path.join(root, f), "rb") as fh:
        h.update(fh.read())
  return f"{prefix}-{h.hexdigest()[:10]}"


def _unwrap(client: Any) -> Any:
  """The backend behind test wrappers that keep it as `.client`."""
  while not hasattr(client, "load_lora_adapter") and not hasattr(client, "adapter_paths") \
      and hasattr(client, "client"):
    client = client.client
  return client


class LocalAdapters:
  """Adapters on the local engine's shared base weights."""

  def __init__(self, client: Any):
    self.client = _unwrap(client)
    if not hasattr(self.client, "adapter_paths"):
      raise ValueError(f"{type(client).__name__} is not a local engine client")

  def load(self, name: str, path: str) -> None:
    if self.client.batchers:
      self.client.add_adapter(name, path)
    else:  # the engine is built on first use; it loads these then
      self.client.adapter_paths[name] = path

  def unload(self, name: str) -> None:
    self.client.adapter_paths.pop(name, None)
    if self.client.batchers:
      remove = getattr(self.client.engine, "remove_adapter", None)
      if remove is not None:
        remove(name)


class SGLangAdapters:
  """Adapters loaded into a running SGLang server (or anything speaking its protocol)."""

  def __init__(self, client: Any):
    self.client = _unwrap(client)
    if not hasattr(self.client, "load_lora_adapter"):
      raise ValueError(f"{type(client).__name__} cannot load LoRA adapters at run time")

  def _run(self, coro_fn, *args: Any) -> Any:
    """One call in its own event loop, closing the connection it opened (the agent's episodes
    run in other loops)."""

    async def call():
      try:
        return await coro_fn(*args)
      finally:
        await self.client.close()

    return asyncio.run(call())

  def load(self, name: str, path: str) -> None:
    try:
      self._run(self.client.load_lora_adapter, name, os.path.abspath(path))
    except LLMCallError as e:
      if "already loaded" not in str(e):
        raise
      # A resumed run: the server kept it. Same name, same weights (`adapter_name`).
      logging.info("adapter %s already loaded on the server", name)

  def unload(self, name: str) -> None:
    try:
      self._run(self.client.unload_lora_adapter, name)
    except LLMCallError as e:
      logging.warning("unloading adapter %s: %s", name, e)


def make_host(kind: str, client: Any) -> AdapterHost:
  """`kind`: "local" or "sglang" (the agent's backend)."""
  if kind == "local":
    return LocalAdapters(client)
  if kind == "sglang":
    return SGLangAdapters(client)
  raise ValueError(f"adapters are deployed on a local or sglang backend, not {kind!r}")
