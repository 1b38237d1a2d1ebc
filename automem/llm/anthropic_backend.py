"""Anthropic's Messages API (`POST {base_url}/messages`), with tool use.

The authors' reviewer was Claude; this backend lets the Loop 1 reviewer run
on it directly. Requests use the neutral (OpenAI-form) messages of
`automem.llm.types`, translated here:

- system messages -> the top-level `system` text;
- an assistant turn with `tool_calls` -> `content` blocks (`text`,
  `tool_use` with the parsed `input`);
- consecutive `role: tool` messages -> one user turn of `tool_result`
  blocks (the API requires results right after the turn that asked);
- `tools` -> `{name, description, input_schema}`, `tool_choice` -> `auto`,
  `any` or `{type: tool, name}`.

A JSON-schema grammar (single-shot reviewer) becomes a forced tool whose
`input_schema` is the schema; its input comes back as the result's text.
Regex/EBNF grammars and LoRA adapters are refused (`unsupported`).
"""

from __future__ import annotations

import json
from typing import Any

from automem.llm.http import HttpClient, int_field, require
from automem.llm.retry import LLMCallError
from automem.llm.types import LLMRequest, LLMResult, ToolCall

ANTHROPIC_VERSION = "2023-06-01"
_SCHEMA_TOOL = "output"


def _messages(req: LLMRequest) -> tuple[str, list[dict[str, Any]]]:
  system, out = [], []
  for m in req.messages or ():
    role = m["role"]
    if role == "system":
      system.append(m["content"])
    elif role == "tool":
      block = {"type": "tool_result", "tool_use_id": str(m.get("tool_call_id", "")),
               "content": m["content"]}
      if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list) \
          and all(b.get("type") == "tool_result" for b in out[-1]["content"]):
        out[-1]["content"].append(block)
      else:
        out.append({"role": "user", "content": [block]})
    elif role == "assistant" and m.get("tool_calls"):
      blocks: list[dict[str, Any]] = [{"type": "text", "text": m["content"]}] if m["content"] \
          else []
      for tc in m["tool_calls"]:
        fn = tc["function"]
        call = ToolCall.parse(tc["id"], fn["name"], fn.get("arguments", ""))
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name,
                       "input": call.arguments})
      out.append({"role": "assistant", "content": blocks})
    elif role in ("user", "assistant"):
      out.append({"role": role, "content": m["content"]})
    else:
      raise LLMCallError("client_error", f"the Messages API has no role {role!r}")
  return "\n\n".join(system), out


def anthropic_payload(req: LLMRequest, model: str) -> dict[str, Any]:
  """The JSON body of a Messages API request."""
  if req.messages is None:
    raise LLMCallError("unsupported", "the Messages API needs chat messages, not a raw prompt")
  if req.adapter:
    raise LLMCallError("unsupported", "the Messages API serves no LoRA adapters")
  system, messages = _messages(req)
  payload: dict[str, Any] = {"model": model, "max_tokens": req.max_new_tokens,
                             "messages": messages, "temperature": min(req.temperature, 1.0)}
  if system:
    payload["system"] = system
  if req.top_p < 1.0:
    payload["top_p"] = req.top_p
  if req.top_k > 0:
    payload["top_k"] = req.top_k
  if req.stop:
    payload["stop_sequences"] = list(req.stop)
  tools = [{"name": t.name, "description": t.description, "input_schema": t.parameters}
           for t in req.tools]
  choice: dict[str, Any] | None = None
  if req.tool_choice == "required":
    choice = {"type": "any"}
  elif req.tool_choice and req.tool_choice != "auto":
    choice = {"type": "tool", "name": req.tool_choice}
  if req.grammar is not None:
    if req.grammar.kind != "json_schema":
      raise LLMCallError("unsupported", f"{req.grammar.kind} grammars need an SGLang server")
    try:
      schema = json.loads(req.grammar.spec)
    except json.JSONDecodeError as e:
      raise LLMCallError("client_error", f"grammar json_schema is not JSON: {e}") from e
    tools.append({"name": _SCHEMA_TOOL, "description": "Give the answer in this form.",
                  "input_schema": schema})
    choice = {"type": "tool", "name": _SCHEMA_TOOL}
  if tools:
    payload["tools"] = tools
  if choice:
    payload["tool_choice"] = choice
  return payload


def parse_anthropic_response(data: Any, where: str, *, schema_output: bool = False) -> LLMResult:
  """An `LLMResult` from a Messages API response body."""
  blocks = require(data, "content", list, where)
  texts, calls = [], []
  for i, b in enumerate(blocks):
    if not isinstance(b, dict):
      raise LLMCallError("bad_response", f"{where}: content[{i}] is not an object")
    if b.get("type") == "text":
      texts.append(str(b.get("text", "")))
    elif b.get("type") == "tool_use":
      if not isinstance(b.get("name"), str) or not isinstance(b.get("id"), str):
        raise LLMCallError("bad_response", f"{where}: content[{i}] tool_use lacks id or name")
      calls.append(ToolCall.parse(b["id"], b["name"], b.get("input", {})))
  reason = data.get("stop_reason")
  usage = data.get("usage") or {}
  text = "".join(texts)
  if schema_output:
    out = [c for c in calls if c.name == _SCHEMA_TOOL]
    if not out:
      raise LLMCallError("bad_response", f"{where}: no {_SCHEMA_TOOL!r} tool call in the reply")
    text, calls = json.dumps(out[0].arguments), []
  return LLMResult(
      text=text,
      finish_reason="length" if reason == "max_tokens" else ("tool_calls" if calls else "stop"),
      prompt_tokens=int_field(usage, "input_tokens") + int_field(usage, "cache_read_input_tokens"),
      completion_tokens=int_field(usage, "output_tokens"),
      cached_tokens=int_field(usage, "cache_read_input_tokens"),
      tool_calls=tuple(calls))


class AnthropicClient(HttpClient):
  """A client for Anthropic's Messages API (or a server speaking it)."""

  backend = "anthropic"
  supports_tools = True

  def __init__(self, base_url: str, model: str, *, api_key: str | None = None,
               version: str = ANTHROPIC_VERSION, **kwargs):
    super().__init__(base_url, api_key=api_key, **kwargs)
    if not model:
      raise ValueError("the anthropic backend needs a model name (config.model)")
    self.model = model
    self.version = version

  @property
  def headers(self) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "anthropic-version": self.version}
    if self.api_key:
      headers["x-api-key"] = self.api_key
    return headers

  async def _call(self, requests: list[LLMRequest]) -> list[LLMResult]:
    (req,) = requests
    payload = anthropic_payload(req, self.model)
    data = await self._request_json("POST", "/messages", payload)
    return [parse_anthropic_response(data, self.base_url + "/messages",
                                     schema_output=req.grammar is not None)]
