"""OpenAI-compatible chat API (any provider; vLLM or SGLang in OpenAI mode).

Chat requests go to `{base_url}/chat/completions`, raw prompts to
`{base_url}/completions`; `base_url` includes the `/v1` part, as in the
OpenAI SDK. Servers that speak SGLang's extensions (`regex`, `ebnf`,
`top_k`, `lora_path`) get them when `sglang_extensions` is on; otherwise a
regex/EBNF grammar is refused with an `unsupported` error, a JSON schema goes
through the standard `response_format`, and an adapter name is sent as the
model name (how vLLM and hosted fine-tunes address LoRA adapters).

Tool calling: a request's `tools` go out as `tools` (`type: function`) with
`tool_choice`; the reply's `message.tool_calls` come back parsed as
`LLMResult.tool_calls` (finish reason "tool_calls"). SGLang serves this with
its `--tool-call-parser` for open models.
"""

from __future__ import annotations

import json
from typing import Any

from automem.llm.http import HttpClient, int_field, require
from automem.llm.retry import LLMCallError
from automem.llm.types import LLMRequest, LLMResult, ToolCall


def openai_payload(req: LLMRequest, model: str, *, sglang_extensions: bool,
                   max_tokens_field: str = "max_tokens") -> dict[str, Any]:
  """The JSON body of a chat (messages) or completion (prompt) request."""
  payload: dict[str, Any] = {"model": model}
  if req.messages is not None:
    payload["messages"] = [dict(m) for m in req.messages]
  else:
    payload["prompt"] = req.prompt
  payload["temperature"] = req.temperature
  payload["top_p"] = req.top_p
  payload[max_tokens_field] = req.max_new_tokens
  if req.stop:
    payload["stop"] = list(req.stop)
  if req.seed is not None:
    payload["seed"] = req.seed
  if sglang_extensions:
    if req.top_k != -1:
      payload["top_k"] = req.top_k
    if req.adapter:
      payload["lora_path"] = req.adapter
    if req.request_id:
      payload["rid"] = req.request_id
  elif req.adapter:
    payload["model"] = req.adapter
  if req.tools:
    payload["tools"] = [{"type": "function", "function": {
        "name": t.name, "description": t.description, "parameters": t.parameters}}
        for t in req.tools]
    if req.tool_choice in ("auto", "required"):
      payload["tool_choice"] = req.tool_choice
    elif req.tool_choice:
      payload["tool_choice"] = {"type": "function", "function": {"name": req.tool_choice}}
  grammar = req.grammar
  if grammar is not None:
    if grammar.kind == "json_schema":
      try:
        schema = json.loads(grammar.spec)
      except json.JSONDecodeError as e:
        raise LLMCallError("client_error", f"grammar json_schema is not JSON: {e}") from e
      payload["response_format"] = {
          "type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    elif sglang_extensions:
      payload[grammar.kind] = grammar.spec
    else:
      raise LLMCallError("unsupported",
                         f"{grammar.kind} grammars need an SGLang server (sglang_extensions)")
  return payload


def parse_openai_response(data: Any, where: str) -> LLMResult:
  """An `LLMResult` from a chat or completion response body."""
  choices = require(data, "choices", list, where)
  if not choices or not isinstance(choices[0], dict):
    raise LLMCallError("bad_response", f"{where}: empty 'choices'")
  choice = choices[0]
  calls: list[ToolCall] = []
  if "message" in choice:
    message = require(choice, "message", dict, where)
    text = message.get("content") or ""
    for i, tc in enumerate(message.get("tool_calls") or ()):
      fn = tc.get("function") if isinstance(tc, dict) else None
      if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise LLMCallError("bad_response", f"{where}: tool_calls[{i}] has no function name")
      calls.append(ToolCall.parse(str(tc.get("id") or f"call_{i}"), fn["name"],
                                  fn.get("arguments", "")))
  else:
    text = require(choice, "text", str, where)
  if not isinstance(text, str):
    raise LLMCallError("bad_response", f"{where}: content is {type(text).__name__}")
  reason = choice.get("finish_reason")
  if reason == "abort":
    return LLMResult.failure("aborted", f"{where}: the server aborted the request")
  usage = data.get("usage") or {}
  details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
  return LLMResult(
      text=text,
      finish_reason="length" if reason == "length" else ("tool_calls" if calls else "stop"),
      tool_calls=tuple(calls),
      prompt_tokens=int_field(usage, "prompt_tokens"),
      completion_tokens=int_field(usage, "completion_tokens"),
      cached_tokens=int_field(details, "cached_tokens"),
  )


class OpenAIClient(HttpClient):
  """A client for any OpenAI-compatible endpoint (the reviewer, or a vLLM/SGLang server)."""

  backend = "openai"
  supports_tools = True

  def __init__(self, base_url: str, model: str, *, api_key: str | None = None,
               sglang_extensions: bool = False, max_tokens_field: str = "max_tokens",
               **kwargs):
    super().__init__(base_url, api_key=api_key, **kwargs)
    if not model:
      raise ValueError("the openai backend needs a model name (config.model)")
    if max_tokens_field not in ("max_tokens", "max_completion_tokens"):
      raise ValueError(f"max_tokens_field must be max_tokens or max_completion_tokens, "
                       f"got {max_tokens_field!r}")
    self.model = model
    self.sglang_extensions = sglang_extensions
    self.max_tokens_field = max_tokens_field

  async def _call(self, requests: list[LLMRequest]) -> list[LLMResult]:
    (req,) = requests
    payload = openai_payload(req, self.model, sglang_extensions=self.sglang_extensions,
                             max_tokens_field=self.max_tokens_field)
    path = "/chat/completions" if req.messages is not None else "/completions"
    data = await self._request_json("POST", path, payload)
    return [parse_openai_response(data, self.base_url + path)]

  async def list_models(self) -> list[str]:
    """Model ids served (`GET {base_url}/models`); raises `LLMCallError` on failure."""
    await self.start()
    data = await self._request_json("GET", "/models", timeout_s=self.timeout_s)
    return [m.get("id", "") for m in require(data, "data", list, "/models") if isinstance(m, dict)]
