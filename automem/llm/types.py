"""Request and result records shared by every LLM backend.

A request is backend-neutral: chat messages (rendered with the model's chat
template by whichever side owns the tokenizer) or a raw prompt, sampling
parameters, stop strings, an optional LoRA adapter name and an optional
grammar. A result always comes back, also when the call failed; then `error`
names the cause and `text` is empty, so an episode loop never has to catch.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

GrammarKind = Literal["regex", "ebnf", "json_schema"]
FinishReason = Literal["stop", "length", "error"]

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
