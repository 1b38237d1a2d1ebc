"""SGLang server backend: native `/generate`, and `/v1/chat/completions` when needed.

With a tokenizer (the served checkpoint's, `tokenizer_path`), chat messages
are rendered with the model's own chat template here and sent to the native
`/generate` endpoint as `input_ids`, so the exact prompt tokens are ours and
identical across backends; up to `batch_size` requests share one HTTP call
(SGLang's batched input). Without a tokenizer, chat requests go to the
server's OpenAI-compatible chat endpoint (the server applies its template)
and raw prompts to `/generate` as text.

Start-up polls `/health` until the server answers (clear message if it never
does) and reads `/get_model_info` to check which model is served.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Protocol

from absl import logging

from automem.llm.http import HttpClient, int_field, require
from automem.llm.openai_backend import openai_payload, parse_openai_response
from automem.llm.retry import LLMCallError, LLMServerUnavailable
from automem.llm.types import LLMRequest, LLMResult


class ChatTokenizer(Protocol):
  """What the client needs from a tokenizer (automem.models.Tokenizer has it)."""

  def encode(self, text: str) -> list[int]: ...

  def apply_chat_template(self, messages: list[dict[str, str]],
                          add_generation_prompt: bool = True) -> list[int]: ...


def load_tokenizer(path: str) -> ChatTokenizer:
  """The project tokenizer of a checkpoint (or tokenizer) directory."""
  from automem.models import Tokenizer

  return Tokenizer.from_pretrained(path)


def parse_generate_item(item: Any, where: str) -> LLMResult:
  """An `LLMResult` from one SGLang `/generate` output `{"text", "meta_info": {...}}`."""
  text = require(item, "text", str, where)
  meta = require(item, "meta_info", dict, where)
  finish = meta.get("finish_reason")
  kind = finish.get("type") if isinstance(finish, dict) else finish
  if kind == "abort":
    message = finish.get("message", "") if isinstance(finish, dict) else ""
    return LLMResult.failure("aborted", f"{where}: the server aborted the request {message}".strip())
  if kind not in ("stop", "length"):
    raise LLMCallError("bad_response", f"{where}: unknown finish_reason {finish!r}")
  return LLMResult(
      text=text,
      finish_reason=kind,
      prompt_tokens=int_field(meta, "prompt_tokens"),
      completion_tokens=int_field(meta, "completion_tokens"),
      cached_tokens=int_field(meta, "cached_tokens"),
  )


class SGLangClient(HttpClient):
  """Client for an SGLang server (`launch/sglang_server.sh`)."""

  backend = "sglang"
  supports_tools = True  # through /v1/chat/completions (SGLang --tool-call-parser)

  def __init__(self, base_url: str, *, model: str = "", tokenizer: ChatTokenizer | None = None,
               tokenizer_path: str = "", batch_size: int = 1, wait_ready_s: float = 60.0,
               api_key: str | None = None, **kwargs):
    super().__init__(base_url, api_key=api_key, **kwargs)
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    self.model = model
    self.batch_size = batch_size
    self.wait_ready_s = wait_ready_s
    self._tokenizer = tokenizer
    self._tokenizer_path = tokenizer_path
    self.model_info: dict[str, Any] = {}

  @property
  def tokenizer(self) -> ChatTokenizer | None:
    if self._tokenizer is None and self._tokenizer_path:
      self._tokenizer = load_tokenizer(self._tokenizer_path)
    return self._tokenizer

  # -- start-up ----------------------------------------------------------------

  async def _start(self) -> None:
    await super()._start()
    if self._tokenizer is None and self._tokenizer_path:
      self._tokenizer = await asyncio.to_thread(load_tokenizer, self._tokenizer_path)
    await self.wait_ready()
    self.model_info = await self.get_model_info()
    self._check_model(self.model_info)

  async def wait_ready(self) -> None:
    """Polls `/health` until it answers 200; `LLMServerUnavailable` after `wait_ready_s`."""
    deadline = time.monotonic() + self.wait_ready_s
    delay, last = 0.1, "no answer"
    while True:
      try:
        await self._request_json_or_empty("GET", "/health")
        return
      except LLMCallError as e:
        last = f"{e.cause}: {e.message}"
      if time.monotonic() + delay > deadline:
        raise LLMServerUnavailable(
            f"SGLang server at {self.base_url} is not ready after {self.wait_ready_s:g} s "
            f"(last /health: {last}). Start one with launch/sglang_server.sh "
            f"--model-path <checkpoint> --port <port>, or point llm.base_url at it.")
      await asyncio.sleep(delay)
      delay = min(2.0, delay * 2)

  async def _request_json_or_empty(self, method: str, path: str) -> Any:
    # /health answers 200 with an empty body; only the status matters.
    try:
      return await self._request_json(method, path, timeout_s=min(self.timeout_s, 10.0))
    except LLMCallError as e:
      if e.cause == "bad_response" and "malformed JSON" in e.message:
        return None
      raise

  async def get_model_info(self) -> dict[str, Any]:
    data = await self._request_json("GET", "/get_model_info", timeout_s=min(self.timeout_s, 10.0))
    if not isinstance(data, dict):
      raise LLMServerUnavailable(f"{self.base_url}/get_model_info returned {data!r}")
    return data

  def _check_model(self, info: dict[str, Any]) -> None:
    served = str(info.get("model_path", ""))
    if info.get("is_generation") is False:
      raise LLMServerUnavailable(f"{self.base_url} serves {served!r}, which is not a generation "
                                 "model")
    if self.model and not _same_model(self.model, served):
      raise LLMServerUnavailable(
          f"{self.base_url} serves {served!r}, but the config asks for {self.model!r}")
    logging.info("SGLang server %s serves %s", self.base_url, served)

  # -- LoRA adapters at run time ------------------------------------------------

  async def load_lora_adapter(self, name: str, path: str, *, pinned: bool = False) -> dict:
    """Loads a PEFT adapter dir into the running server (`/load_lora_adapter`).

    Requests with `adapter=name` use it from then on; a server started with
    `--enable-lora` is needed. Raises `LLMCallError` when the server refuses.
    """
    await self.start()
    return await self._adapter_call("/load_lora_adapter",
                                    {"lora_name": name, "lora_path": path, "pinned": pinned})

  async def unload_lora_adapter(self, name: str) -> dict:
    """Unloads adapter `name` (`/unload_lora_adapter`)."""
    await self.start()
    return await self._adapter_call("/unload_lora_adapter", {"lora_name": name})

  async def _adapter_call(self, path: str, payload: dict[str, Any]) -> dict:
    data = await self._request_json("POST", path, payload, timeout_s=self.timeout_s)
    if not isinstance(data, dict) or data.get("success") is False:
      message = data.get("error_message") if isinstance(data, dict) else data
      raise LLMCallError("client_error", f"{self.base_url}{path}: {message}")
    return data

  # -- generation --------------------------------------------------------------

  def _uses_chat_endpoint(self, req: LLMRequest) -> bool:
    # Tool calls are parsed by the server's --tool-call-parser on its chat endpoint only.
    return req.messages is not None and (self.tokenizer is None or bool(req.tools))

  def _group(self, requests: list[LLMRequest]) -> list[list[int]]:
    native = [i for i, r in enumerate(requests) if not self._uses_chat_endpoint(r)]
    chat = [[i] for i, r in enumerate(requests) if self._uses_chat_endpoint(r)]
    batches = [native[k:k + self.batch_size] for k in range(0, len(native), self.batch_size)]
    return batches + chat

  def generate_payload(self, requests: list[LLMRequest]) -> dict[str, Any]:
    """The `/generate` body for a group (a single request unbatched, else lists)."""
    tok = self.tokenizer
    if tok is not None:
      prompts: list[Any] = [
          tok.apply_chat_template([dict(m) for m in r.messages], add_generation_prompt=True)
          if r.messages is not None else tok.encode(r.prompt) for r in requests]
      key = "input_ids"
    else:
      prompts = [r.prompt for r in requests]
      key = "text"
    single = len(requests) == 1
    payload: dict[str, Any] = {
        key: prompts[0] if single else prompts,
        "sampling_params": (requests[0].sglang_sampling_params() if single
                            else [r.sglang_sampling_params() for r in requests]),
    }
    if any(r.adapter for r in requests):
      adapters = [r.adapter for r in requests]
      payload["lora_path"] = adapters[0] if single else adapters
    if all(r.request_id for r in requests):
      ids = [r.request_id for r in requests]
      payload["rid"] = ids[0] if single else ids
    return payload

  async def _call(self, requests: list[LLMRequest]) -> list[LLMResult]:
    if self._uses_chat_endpoint(requests[0]):
      (req,) = requests
      payload = openai_payload(req, self.model or "default", sglang_extensions=True)
      data = await self._request_json("POST", "/v1/chat/completions", payload)
      return [parse_openai_response(data, self.base_url + "/v1/chat/completions")]
    data = await self._request_json("POST", "/generate", self.generate_payload(requests))
    where = self.base_url + "/generate"
    items = data if isinstance(data, list) else [data]
    if len(items) != len(requests):
      raise LLMCallError("bad_response",
                         f"{where}: {len(items)} outputs for {len(requests)} inputs")
    return [parse_generate_item(item, where) for item in items]


def _same_model(wanted: str, served: str) -> bool:
  """True if `served` (a path or hub id) names the checkpoint `wanted`."""
  norm = lambda s: os.path.normpath(s.rstrip("/"))  # noqa: E731
  if norm(wanted) == norm(served):
    return True
  # The client and the server may see one checkpoint under different mount points, and a hub
  # id against a local copy ("Qwen/Qwen2.5-7B" vs "/ckpt/Qwen2.5-7B"): compare the names. Two
  # checkpoints that share a directory name (runs/a/ckpt, runs/b/ckpt) are not told apart.
  return os.path.basename(norm(wanted)) == os.path.basename(norm(served))
