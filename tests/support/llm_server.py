"""A 127.0.0.1 HTTP server speaking SGLang's, OpenAI's and Anthropic's formats, with faults.

It stands in for a GPU-only SGLang server in tests: the same endpoints and
JSON shapes (`/health`, `/get_model_info`, `/generate` with single or batched
`text`/`input_ids`, `/v1/chat/completions`, `/v1/completions`, `/v1/models`,
and Anthropic's `/v1/messages` for a Claude endpoint),
backed by a real generation engine (the tiny local model) through the same
dynamic batcher the local backend uses, with an SGLang-like prefix cache
count. `inject()` makes the next N generation requests fail in a chosen way;
`kill()` drops every open connection and stops listening, as a crashed
server would; `start()` brings it back on the same port.

Tool calling (a reviewer's protocol): `script(reply, ...)` queues assistant
replies that the next chat or Messages requests get instead of the engine's
text, each `{"content": str, "tool_calls": [{"name", "arguments"}]}` or a
function of the request body returning one (a scripted reviewer that reacts
to its tool results). Both protocols are checked as a real API would: tool
definitions well-formed, every `role: tool` message / `tool_result` block
answering a call of the assistant turn before it, scripted calls naming an
offered tool; a violation is a 400 with the reason.

Use: `with LLMTestServer(engine, tokenizer) as server: ... server.url ...`
or the `llm_server` fixture factory in tests/llm/conftest.py.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import socket
import threading
import time
import uuid
from typing import Any

from aiohttp import web

from automem.llm.local import BatchingEngine

FAULT_MODES = ("http_500", "http_503", "http_429", "http_400", "slow", "truncated", "malformed",
               "abort", "health_503")  # health_503: /health answers 503 (still loading)


@dataclasses.dataclass
class Fault:
  mode: str
  remaining: int  # how many more generation requests it applies to
  retry_after: str | None = None  # http_429 / http_503: the Retry-After header value
  delay_s: float = 0.0  # slow: seconds before answering


def free_port() -> int:
  """A port nothing listens on right now (for refused-connection tests and restarts)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class LLMTestServer:
  """SGLang/OpenAI-format server on 127.0.0.1 in a background thread.

  Args:
    engine: a generation engine (`generate(prompts, params) -> outputs`).
    tokenizer: its tokenizer (`encode`, `apply_chat_template`).
    sampling_params_cls: the engine's SamplingParams class.
    model_path: what `/get_model_info` reports as served.
    adapters: adapter name -> engine serving it (SGLang `lora_path` values).
    adapter_loader: `path -> engine` for `/load_lora_adapter` (None: loading refused).
    api_key: when set, every request must carry `Authorization: Bearer <key>`.
    port: 0 picks a free port.
  """

  def __init__(self, engine: Any, tokenizer: Any, sampling_params_cls: type, *,
               model_path: str = "tiny-model", adapters: dict[str, Any] | None = None,
               adapter_loader: Any = None, api_key: str | None = None, port: int = 0,
               max_batch_size: int = 64, batch_wait_s: float = 0.005):
    self.tokenizer = tokenizer
    self.params_cls = sampling_params_cls
    self.model_path = model_path
    self.api_key = api_key
    self.port = port or free_port()
    self.adapter_loader = adapter_loader
    self._batch_kw = dict(max_batch_size=max_batch_size, batch_wait_s=batch_wait_s)
    self.batchers = {None: BatchingEngine(engine, max_batch_size=max_batch_size,
                                          batch_wait_s=batch_wait_s)}
    for name, eng in (adapters or {}).items():
      self.batchers[name] = BatchingEngine(eng, max_batch_size=max_batch_size,
                                           batch_wait_s=batch_wait_s)
    self.requests: list[tuple[str, Any]] = []  # (path, JSON body) of every POST, in order
    self.status_counts: dict[int, int] = {}
    self.in_flight = 0  # POST requests being handled now
    self.max_in_flight = 0  # the most at once since the last reset_counts()
    self._fault: Fault | None = None
    self._script: collections.deque[Any] = collections.deque()
    self._lock = threading.Lock()
    self._prefixes: list[tuple[int, ...]] = []  # prompt history for the prefix-cache count
    self._transports: set[asyncio.BaseTransport] = set()
    self._runner: web.AppRunner | None = None
    self._loop = asyncio.new_event_loop()
    self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                    name="llm-test-server")
    self._thread.start()

  # -- lifecycle ---------------------------------------------------------------

  @property
  def url(self) -> str:
    return f"http://127.0.0.1:{self.port}"

  def _run(self, coro, timeout: float = 30.0):
    return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

  def start(self) -> LLMTestServer:
    if self._runner is None:
      self._run(self._start())
    return self

  async def _start(self) -> None:
    app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024**2)
    app.router.add_get("/health", self._health)
    app.router.add_get("/health_generate", self._health)
    app.router.add_get("/get_model_info", self._model_info)
    app.router.add_get("/v1/models", self._models)
    app.router.add_post("/generate", self._generate)
    app.router.add_post("/v1/chat/completions", self._chat)
    app.router.add_post("/v1/completions", self._completions)
    app.router.add_post("/v1/messages", self._messages)
    app.router.add_post("/load_lora_adapter", self._load_lora)
    app.router.add_post("/unload_lora_adapter", self._unload_lora)
    # handler_cancellation: a client that gives up (timeout) cancels its handler, as
    # SGLang aborts a request whose connection closed.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True)
    await site.start()
    self._runner = runner

  def kill(self) -> None:
    """Dies like a crashed process: open connections reset, port closed."""
    if self._runner is not None:
      self._run(self._kill())

  async def _kill(self) -> None:
    runner, self._runner = self._runner, None
    for t in list(self._transports):
      t.abort()
    self._transports.clear()
    await runner.cleanup()

  def close(self) -> None:
    self.kill()
    for b in self.batchers.values():
      self._loop.call_soon_threadsafe(b.close)
    self._loop.call_soon_threadsafe(self._loop.stop)
    self._thread.join(timeout=10)

  def __enter__(self) -> LLMTestServer:
    return self.start()

  def __exit__(self, *exc) -> None:
    self.close()

  # -- faults ------------------------------------------------------------------

  def inject(self, mode: str, times: int = 1, *, retry_after: str | None = None,
             delay_s: float = 0.0) -> None:
    """The next `times` generation requests fail with `mode` (see FAULT_MODES)."""
    if mode not in FAULT_MODES:
      raise ValueError(f"unknown fault {mode!r}; known: {FAULT_MODES}")
    with self._lock:
      self._fault = Fault(mode, times, retry_after, delay_s)

  def clear_faults(self) -> None:
    with self._lock:
      self._fault = None
      self._script.clear()

  def script(self, *replies: Any) -> None:
    """Queues scripted assistant replies (see the module docstring) for chat/Messages requests."""
    with self._lock:
      self._script.extend(replies)

  @property
  def scripted_left(self) -> int:
    return len(self._script)

  def _next_scripted(self, body: dict) -> dict | None:
    with self._lock:
      if not self._script:
        return None
      reply = self._script.popleft()
    return reply(body) if callable(reply) else reply

  def _take_fault(self, health: bool = False) -> Fault | None:
    with self._lock:
      f = self._fault
      if f is None or (f.mode == "health_503") != health:
        return None
      f.remaining -= 1
      if f.remaining <= 0:
        self._fault = None
      return dataclasses.replace(f)

  def reset_counts(self) -> None:
    with self._lock:
      self.requests.clear()
      self.status_counts.clear()
      self.max_in_flight = self.in_flight

  # -- HTTP --------------------------------------------------------------------

  @web.middleware
  async def _middleware(self, request: web.Request, handler):
    if request.transport is not None:
      self._transports.add(request.transport)
    keys = (request.headers.get("Authorization"), "Bearer " + request.headers.get("x-api-key", ""))
    if self.api_key and f"Bearer {self.api_key}" not in keys:
      resp = web.json_response({"error": {"message": "invalid API key"}}, status=401)
    else:
      resp = await self._handle(request, handler)
    with self._lock:
      self.status_counts[resp.status] = self.status_counts.get(resp.status, 0) + 1
    return resp

  async def _handle(self, request: web.Request, handler) -> web.StreamResponse:
    if request.method != "POST":
      return await handler(request)
    raw = await request.read()
    try:
      body = json.loads(raw)
    except json.JSONDecodeError as e:
      return _error(400, f"request body is not JSON: {e}")
    with self._lock:
      self.requests.append((request.path, body))
      self.in_flight += 1
      self.max_in_flight = max(self.max_in_flight, self.in_flight)
    try:
      return await self._answer(request, handler, body)
    finally:
      with self._lock:
        self.in_flight -= 1

  async def _answer(self, request: web.Request, handler, body: Any) -> web.StreamResponse:
    fault = self._take_fault()
    if fault is not None:
      if fault.mode == "slow":
        await asyncio.sleep(fault.delay_s)
      elif fault.mode in ("http_500", "http_503", "http_429", "http_400"):
        status = int(fault.mode[-3:])
        headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
        return _error(status, f"injected {fault.mode}", headers=headers)
      elif fault.mode == "malformed":
        return web.Response(status=200, text='{"text": "half', content_type="application/json")
      elif fault.mode == "truncated":
        return await self._truncated(request, handler, body)
    request[_BODY] = body
    request[_ABORT] = fault is not None and fault.mode == "abort"
    try:
      return await handler(request)
    except _BadRequest as e:
      return _error(400, str(e))

  async def _truncated(self, request, handler, body) -> web.StreamResponse:
    request[_BODY], request[_ABORT] = body, False
    full = await handler(request)
    data = full.body if isinstance(full.body, bytes) else json.dumps({}).encode()
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    resp.content_length = len(data)
    await resp.prepare(request)
    await resp.write(data[: len(data) // 2])
    request.transport.close()  # the rest never comes
    return resp

  async def _health(self, request: web.Request) -> web.Response:
    if self._take_fault(health=True) is not None:
      return web.Response(status=503)
    return web.Response(status=200)

  async def _model_info(self, request: web.Request) -> web.Response:
    return web.json_response({
        "model_path": self.model_path, "tokenizer_path": self.model_path, "is_generation": True,
        "preferred_sampling_params": None, "weight_version": "default"})

  async def _models(self, request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [
        {"id": self.model_path, "object": "model", "created": 0, "owned_by": "automem"}]})

  # -- LoRA adapters ----------------------------------------------------------------

  def _loaded(self) -> dict[str, str]:
    return {name: name for name in self.batchers if name}

  async def _load_lora(self, request: web.Request) -> web.Response:
    body = request[_BODY]
    name, path = body.get("lora_name"), body.get("lora_path")
    error = None
    if not name or not path:
      error = "lora_name and lora_path are required"
    elif name in self.batchers:
      error = f"The LoRA adapter {name!r} is already loaded"
    elif self.adapter_loader is None:
      error = "LoRA is not enabled on this server"
    else:
      try:
        engine = await asyncio.to_thread(self.adapter_loader, path)
      except Exception as e:  # a missing or broken adapter dir
        error = f"failed to load {path!r}: {type(e).__name__}: {e}"
      else:
        self.batchers[name] = BatchingEngine(engine, **self._batch_kw)
    return web.json_response({"success": error is None, "error_message": error or "",
                              "loaded_adapters": self._loaded()},
                             status=200 if error is None else 400)

  async def _unload_lora(self, request: web.Request) -> web.Response:
    name = request[_BODY].get("lora_name")
    batcher = self.batchers.pop(name, None) if name else None
    if batcher is not None:
      batcher.close()
    error = None if batcher is not None else f"The LoRA adapter {name!r} is not loaded"
    return web.json_response({"success": error is None, "error_message": error or "",
                              "loaded_adapters": self._loaded()},
                             status=200 if error is None else 400)

  # -- generation --------------------------------------------------------------

  def _params(self, sp: dict[str, Any]) -> Any:
    if not isinstance(sp, dict):
      raise _BadRequest(f"sampling_params must be an object, got {type(sp).__name__}")
    stop = sp.get("stop") or []
    if isinstance(stop, str):
      stop = [stop]
    temperature = float(sp.get("temperature", 1.0))
    top_p = float(sp.get("top_p", 1.0))
    if temperature < 0 or not 0 < top_p <= 1:
      raise _BadRequest(f"bad sampling params {sp}")
    if sum(sp.get(k) is not None for k in ("regex", "ebnf", "json_schema")) > 1:
      raise _BadRequest("Only one of regex, json_schema, or ebnf can be set.")
    try:  # SGLang's top_k -1 (off) is the engine's 0
      return self.params_cls(temperature=temperature, top_p=top_p,
                             top_k=max(0, int(sp.get("top_k", -1))),
                             max_new_tokens=int(sp.get("max_new_tokens", 128)),
                             stop=tuple(stop), seed=sp.get("sampling_seed"))
    except (TypeError, ValueError) as e:
      raise _BadRequest(f"bad sampling params: {e}") from e

  def _cached(self, prompt: list[int]) -> int:
    """Longest prefix shared with an earlier prompt (what a radix cache would reuse)."""
    key = tuple(prompt)
    with self._lock:
      best = 0
      for p in self._prefixes:
        n = 0
        for a, b in zip(p, key):
          if a != b:
            break
          n += 1
        best = max(best, n)
      self._prefixes.append(key)
      del self._prefixes[:-256]
    return min(best, max(0, len(prompt) - 1))

  async def _run_one(self, prompt: list[int], params: Any, adapter: str | None) -> dict:
    if adapter not in self.batchers:
      raise _BadRequest(f"unknown LoRA adapter {adapter!r}")
    t0 = time.perf_counter()
    cached = self._cached(prompt)
    try:
      out = await self.batchers[adapter].submit(prompt, params)
    except ValueError as e:  # e.g. prompt + max_new_tokens too long: SGLang answers 400
      raise _BadRequest(str(e)) from e
    finish = ({"type": "length", "length": int(out.completion_tokens)}
              if out.finish_reason == "length" else
              {"type": "stop", "matched": int(out.token_ids[-1]) if out.token_ids else None})
    return {"text": out.text, "output_ids": [int(t) for t in out.token_ids], "meta_info": {
        "id": uuid.uuid4().hex, "finish_reason": finish, "prompt_tokens": len(prompt),
        "completion_tokens": int(out.completion_tokens), "cached_tokens": cached,
        "e2e_latency": time.perf_counter() - t0}}

  async def _generate(self, request: web.Request) -> web.Response:
    body = request[_BODY]
    if not isinstance(body, dict):
      raise _BadRequest("body must be an object")
    if ("text" in body) == ("input_ids" in body):
      raise _BadRequest("Either text or input_ids should be provided.")
    if "text" in body:
      batched = isinstance(body["text"], list)
      texts = body["text"] if batched else [body["text"]]
      if not all(isinstance(t, str) for t in texts):
        raise _BadRequest("text must be a string or a list of strings")
      prompts = [list(self.tokenizer.encode(t)) for t in texts]
    else:
      ids = body["input_ids"]
      batched = bool(ids) and isinstance(ids[0], list)
      prompts = ids if batched else [ids]
      if not all(isinstance(p, list) and all(isinstance(t, int) for t in p) for p in prompts):
        raise _BadRequest("input_ids must be a list of ints or a list of lists of ints")
    n = len(prompts)
    sps = body.get("sampling_params") or {}
    sps = sps if isinstance(sps, list) else [sps] * n
    adapters = body.get("lora_path")
    adapters = adapters if isinstance(adapters, list) else [adapters] * n
    if len(sps) != n or len(adapters) != n:
      raise _BadRequest("sampling_params / lora_path lists must match the batch size")
    params = [self._params(sp) for sp in sps]
    outs = await asyncio.gather(*(self._run_one(p, sp, a)
                                  for p, sp, a in zip(prompts, params, adapters)))
    if request[_ABORT]:
      for o in outs:
        o["meta_info"]["finish_reason"] = {"type": "abort", "message": "injected abort"}
    return web.json_response(outs if batched else outs[0])

  def _openai_params(self, body: dict) -> tuple[Any, str | None]:
    sp = {"temperature": body.get("temperature", 1.0), "top_p": body.get("top_p", 1.0),
          "top_k": body.get("top_k", -1), "stop": body.get("stop"),
          "sampling_seed": body.get("seed"),
          "max_new_tokens": body.get("max_completion_tokens") or body.get("max_tokens") or 128,
          "regex": body.get("regex"), "ebnf": body.get("ebnf")}
    return self._params(sp), body.get("lora_path")

  async def _openai(self, request: web.Request, prompt: list[int], kind: str) -> web.Response:
    body = request[_BODY]
    params, adapter = self._openai_params(body)
    out = await self._run_one(prompt, params, adapter)
    meta = out["meta_info"]
    reason = "abort" if request[_ABORT] else meta["finish_reason"]["type"]
    choice: dict[str, Any] = {"index": 0, "finish_reason": reason, "logprobs": None}
    if kind == "chat":
      choice["message"] = {"role": "assistant", "content": out["text"]}
    else:
      choice["text"] = out["text"]
    return web.json_response({
        "id": meta["id"], "object": "chat.completion" if kind == "chat" else "text_completion",
        "created": int(time.time()), "model": body.get("model", self.model_path),
        "choices": [choice],
        "usage": {"prompt_tokens": meta["prompt_tokens"],
                  "completion_tokens": meta["completion_tokens"],
                  "total_tokens": meta["prompt_tokens"] + meta["completion_tokens"],
                  "prompt_tokens_details": {"cached_tokens": meta["cached_tokens"]}}})

  async def _chat(self, request: web.Request) -> web.Response:
    body = request[_BODY]
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
      raise _BadRequest("messages must be a non-empty list")
    offered = _check_openai_tools(body)
    reply = self._next_scripted(body)
    if reply is not None:
      return self._scripted_openai(body, reply, offered)
    if any(m.get("role") == "tool" or m.get("tool_calls") for m in messages):
      messages = [{"role": "user" if m["role"] == "tool" else m["role"],
                   "content": m.get("content") or ""} for m in messages]
    prompt = list(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True))
    return await self._openai(request, prompt, "chat")

  async def _completions(self, request: web.Request) -> web.Response:
    text = request[_BODY].get("prompt")
    if not isinstance(text, str):
      raise _BadRequest("prompt must be a string")
    return await self._openai(request, list(self.tokenizer.encode(text)), "completion")


  def _count(self, value: Any) -> int:
    return len(self.tokenizer.encode(json.dumps(value, ensure_ascii=False)))

  def _scripted_openai(self, body: dict, reply: dict, offered: set[str]) -> web.Response:
    calls = []
    for c in reply.get("tool_calls", ()):
      if c["name"] not in offered:
        raise _BadRequest(f"scripted tool call {c['name']!r} names no offered tool")
      calls.append({"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function",
                    "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}})
    message: dict[str, Any] = {"role": "assistant", "content": reply.get("content")}
    if calls:
      message["tool_calls"] = calls
    prompt, completion = self._count(body["messages"]), self._count(reply)
    return web.json_response({
        "id": uuid.uuid4().hex, "object": "chat.completion", "created": int(time.time()),
        "model": body.get("model", self.model_path),
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": "tool_calls" if calls else "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion}})

  async def _messages(self, request: web.Request) -> web.Response:
    """Anthropic's Messages API: scripted replies, else the engine on the flattened text."""
    body = request[_BODY]
    if not request.headers.get("anthropic-version"):
      raise _BadRequest("anthropic-version header is required")
    if not isinstance(body.get("model"), str) or not isinstance(body.get("max_tokens"), int):
      raise _BadRequest("model (string) and max_tokens (integer) are required")
    offered = _check_anthropic(body)
    reply = self._next_scripted(body)
    usage_in = self._count([body.get("system", ""), body["messages"]])
    if reply is not None:
      blocks: list[dict[str, Any]] = []
      if reply.get("content"):
        blocks.append({"type": "text", "text": reply["content"]})
      for c in reply.get("tool_calls", ()):
        if c["name"] not in offered:
          raise _BadRequest(f"scripted tool call {c['name']!r} names no offered tool")
        blocks.append({"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:12]}",
                       "name": c["name"], "input": c["arguments"]})
      stop = "tool_use" if reply.get("tool_calls") else "end_turn"
      out_tokens = self._count(reply)
    else:
      msgs = [{"role": "system", "content": body["system"]}] if body.get("system") else []
      for m in body["messages"]:
        content = m["content"]
        if isinstance(content, list):
          content = "\n".join(str(b.get("text") or b.get("content") or b.get("input") or "")
                              for b in content)
        msgs.append({"role": m["role"], "content": content})
      prompt = list(self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True))
      params = self._params({"temperature": body.get("temperature", 1.0),
                             "top_p": body.get("top_p", 1.0), "top_k": body.get("top_k", -1),
                             "stop": body.get("stop_sequences"),
                             "max_new_tokens": body["max_tokens"]})
      out = await self._run_one(prompt, params, None)
      blocks = [{"type": "text", "text": out["text"]}]
      stop = "max_tokens" if out["meta_info"]["finish_reason"]["type"] == "length" else "end_turn"
      usage_in, out_tokens = len(prompt), out["meta_info"]["completion_tokens"]
    return web.json_response({
        "id": f"msg_{uuid.uuid4().hex[:12]}", "type": "message", "role": "assistant",
        "model": body["model"], "content": blocks, "stop_reason": stop, "stop_sequence": None,
        "usage": {"input_tokens": usage_in, "output_tokens": out_tokens}})


def _check_openai_tools(body: dict) -> set[str]:
  """The offered tool names; a 400 for malformed tools or tool messages without their call."""
  offered = set()
  for t in body.get("tools") or ():
    fn = t.get("function") if isinstance(t, dict) else None
    if t.get("type") != "function" or not isinstance(fn, dict) or not fn.get("name") \
        or not isinstance(fn.get("parameters", {}), dict):
      raise _BadRequest(f"malformed tool {t!r}")
    offered.add(fn["name"])
  open_calls: set[str] = set()
  for i, m in enumerate(body["messages"]):
    if m.get("role") == "assistant":
      open_calls = set()
      for c in m.get("tool_calls") or ():
        if not c.get("id") or not isinstance(c.get("function", {}).get("arguments"), str):
          raise _BadRequest(f"messages[{i}].tool_calls: each needs an id and string arguments")
        open_calls.add(c["id"])
    elif m.get("role") == "tool":
      if m.get("tool_call_id") not in open_calls:
        raise _BadRequest(f"messages[{i}]: role 'tool' must answer a tool call of the "
                          "preceding assistant message")
      open_calls.discard(m["tool_call_id"])
    elif open_calls:
      raise _BadRequest(f"messages[{i}]: tool calls {sorted(open_calls)} were not answered")
  return offered


def _check_anthropic(body: dict) -> set[str]:
  offered = set()
  for t in body.get("tools") or ():
    if not isinstance(t, dict) or not t.get("name") or \
        not isinstance(t.get("input_schema"), dict) or t["input_schema"].get("type") != "object":
      raise _BadRequest(f"malformed tool {t!r}")
    offered.add(t["name"])
  messages = body.get("messages")
  if not isinstance(messages, list) or not messages or messages[0].get("role") != "user":
    raise _BadRequest("messages must be a non-empty list starting with a user turn")
  pending: set[str] = set()
  for i, m in enumerate(messages):
    if m.get("role") not in ("user", "assistant"):
      raise _BadRequest(f"messages[{i}]: role must be user or assistant")
    if i and messages[i - 1]["role"] == m["role"]:
      raise _BadRequest(f"messages[{i}]: roles must alternate")
    blocks = m["content"] if isinstance(m["content"], list) else []
    if m["role"] == "assistant":
      pending = {b["id"] for b in blocks if b.get("type") == "tool_use"}
      continue
    answered = {b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"}
    if answered - pending or pending - answered:
      raise _BadRequest(f"messages[{i}]: tool_result blocks must answer exactly the tool_use "
                        "blocks of the previous assistant turn")
    pending = set()
  return offered


_BODY = web.RequestKey("body", object)
_ABORT = web.RequestKey("abort", bool)


class _BadRequest(ValueError):
  pass


def _error(status: int, message: str, headers: dict | None = None) -> web.Response:
  return web.json_response({"error": {"message": message, "code": status}}, status=status,
                           headers=headers)
