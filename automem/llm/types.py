"""Request and result records shared by every LLM backend.

A request is backend-neutral: chat messages (rendered with the model's chat
template by whichever side owns the tokenizer) or a raw prompt, sampling
parameters, stop strings, an optional LoRA adapter name and an optional
grammar. A result always comes back, also when the call failed; then `error`
names the cause and `text` is empty, so an episode loop never has to catch.

Tool calling (the Loop 1 reviewer): a request may offer `tools` (`ToolSpec`:
name, description, JSON-schema parameters); a result then carries the
model's `tool_calls` (`ToolCall`: id, name, parsed arguments). The
conversation goes on in the OpenAI message form, which every backend
translates: an assistant turn `{"role": "assistant", "content": text,
"tool_calls": [ToolCall.to_message()...]}` and one `{"role": "tool",
"tool_call_id": id, "content": result}` message per call.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Literal

GrammarKind = Literal["regex", "ebnf", "json_schema"]
FinishReason = Literal["stop", "length", "tool_calls", "error"]

# Error causes a result may carry (`LLMResult.error_cause`).
ERROR_CAUSES = (
    "connection",  # refused / reset / server went away
    "timeout",  # no complete response within `timeout_s`
    "rate_limited",  # HTTP 429 after all retries
    "server_error",  # HTTP 5xx after all retries
    "client_error",  # HTTP 4xx other than 429 (never retried)
    "bad_response",  # truncated body, malformed JSON, missing fields
    "unsupported",  # the backend cannot honour the request (e.g. grammar locally)
    "engine",  # the in-process engine raised
    "aborted",  # the server aborted the request (SGLang finish_reason "abort")
)


@dataclasses.dataclass(frozen=True)
class Grammar:
  """An output constraint: a regex, an EBNF grammar or a JSON schema (as text)."""

  kind: GrammarKind
  spec: str

  def __post_init__(self):
    if self.kind not in ("regex", "ebnf", "json_schema"):
      raise ValueError(f"grammar kind must be regex, ebnf or json_schema, got {self.kind!r}")
    if not isinstance(self.spec, str) or not self.spec:
      raise ValueError("grammar spec must be a non-empty string")


@dataclasses.dataclass(frozen=True)
class ToolSpec:
  """A tool the model may call: a name, what it does, and its arguments' JSON schema."""

  name: str
  description: str
  parameters: dict[str, Any] = dataclasses.field(
      default_factory=lambda: {"type": "object", "properties": {}})

  def __post_init__(self):
    if not isinstance(self.name, str) or not self.name.replace("_", "").replace("-", "").isalnum():
      raise ValueError(f"tool name must be letters, digits, _ or -, got {self.name!r}")
    if not isinstance(self.parameters, dict) or self.parameters.get("type") != "object":
      raise ValueError(f"tool {self.name}: parameters must be a JSON schema of type object")


@dataclasses.dataclass(frozen=True)
class ToolCall:
  """One tool call of a completion. `error` is set when its arguments were not a JSON object
  (then `arguments` is empty and `raw_arguments` holds what came)."""

  id: str
  name: str
  arguments: dict[str, Any]
  raw_arguments: str = ""
  error: str | None = None

  def to_message(self) -> dict[str, Any]:
    """The OpenAI form of the call, for the assistant message that carried it."""
    raw = self.raw_arguments or json.dumps(self.arguments)
    return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": raw}}

  @classmethod
  def parse(cls, call_id: str, name: str, arguments: Any) -> ToolCall:
    """From a JSON-text (OpenAI) or object (Anthropic) argument field."""
    if isinstance(arguments, dict):
      return cls(call_id, name, arguments, json.dumps(arguments))
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    try:
      value = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as e:
      return cls(call_id, name, {}, raw, f"arguments are not valid JSON: {e}")
    if not isinstance(value, dict):
      return cls(call_id, name, {}, raw, "arguments must be a JSON object")
    return cls(call_id, name, value, raw)


@dataclasses.dataclass(frozen=True)
class LLMRequest:
  """One generation request.

  Exactly one of `messages` (chat turns `{"role", "content"}`) and `prompt`
  (raw text, sent as is) must be given.
  """

  messages: tuple[dict[str, str], ...] | list[dict[str, str]] | None = None
  prompt: str | None = None
  temperature: float = 1.0
  top_p: float = 1.0
  top_k: int = -1  # -1: no top-k filtering (SGLang's convention)
  max_new_tokens: int = 256
  stop: tuple[str, ...] | list[str] = ()
  seed: int | None = None
  adapter: str | None = None  # LoRA adapter name (SGLang `lora_path`), None = base model
  grammar: Grammar | None = None
  request_id: str | None = None  # forwarded as SGLang `rid` when set
  tools: tuple[ToolSpec, ...] | list[ToolSpec] = ()  # tools the model may call
  tool_choice: str | None = None  # None/"auto", "required" (some tool) or a tool's name
  metadata: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)

  def __post_init__(self):
    if (self.messages is None) == (self.prompt is None):
      raise ValueError("LLMRequest needs exactly one of messages= or prompt=")
    if self.messages is not None:
      msgs = tuple(dict(m) for m in self.messages)
      if not msgs:
        raise ValueError("LLMRequest.messages is empty")
      for m in msgs:
        if not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
          raise ValueError(f"each message needs string 'role' and 'content', got {m!r}")
      object.__setattr__(self, "messages", msgs)
    elif not isinstance(self.prompt, str):
      raise ValueError(f"LLMRequest.prompt must be a string, got {type(self.prompt).__name__}")
    object.__setattr__(self, "tools", tuple(self.tools))
    if self.tools and self.messages is None:
      raise ValueError("tools need a chat request (messages=)")
    if any(not isinstance(t, ToolSpec) for t in self.tools):
      raise ValueError("LLMRequest.tools must be ToolSpec objects")
    names = [t.name for t in self.tools]
    if len(set(names)) != len(names):
      raise ValueError(f"duplicate tool names: {names}")
    if self.tool_choice not in (None, "auto", "required", *names):
      raise ValueError(f"tool_choice must be auto, required or an offered tool, "
                       f"got {self.tool_choice!r}")
    if isinstance(self.stop, str):
      object.__setattr__(self, "stop", (self.stop,))
    else:
      object.__setattr__(self, "stop", tuple(self.stop))
    if self.max_new_tokens < 1:
      raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
    if self.temperature < 0:
      raise ValueError(f"temperature must be >= 0, got {self.temperature}")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

  def sglang_sampling_params(self) -> dict[str, Any]:
    """The SGLang `sampling_params` dict for this request."""
    params: dict[str, Any] = {
        "temperature": self.temperature,
        "top_p": self.top_p,
        "top_k": self.top_k,
        "max_new_tokens": self.max_new_tokens,
    }
    if self.stop:
      params["stop"] = list(self.stop)
    if self.seed is not None:
      params["sampling_seed"] = self.seed
    if self.grammar is not None:
      params[self.grammar.kind] = self.grammar.spec
    return params


@dataclasses.dataclass(frozen=True)
class LLMResult:
  """What came back for one request; `error` is set (and `text` empty) on failure."""

  text: str
  finish_reason: FinishReason
  prompt_tokens: int = 0
  completion_tokens: int = 0
  cached_tokens: int = 0
  latency_s: float = 0.0
  error: str | None = None
  error_cause: str | None = None  # one of ERROR_CAUSES when error is set
  attempts: int = 1  # HTTP attempts made (1 + retries)
  tool_calls: tuple[ToolCall, ...] = ()  # the completion's tool calls (tool requests)

  @property
  def ok(self) -> bool:
    return self.error is None

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def failure(cls, cause: str, message: str, *, latency_s: float = 0.0,
              attempts: int = 1) -> LLMResult:
    if cause not in ERROR_CAUSES:
      raise ValueError(f"unknown error cause {cause!r}")
    return cls(text="", finish_reason="error", latency_s=latency_s,
               error=f"{cause}: {message}", error_cause=cause, attempts=attempts)
