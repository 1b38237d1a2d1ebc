"""TEMPORARY deterministic engine for developing the HTTP layer before automem.models lands."""
from __future__ import annotations

import dataclasses
import threading


@dataclasses.dataclass
class SamplingParams:
  temperature: float = 1.0
  top_p: float = 1.0
  top_k: int = -1
  max_new_tokens: int = 16
  stop: list = dataclasses.field(default_factory=list)
  seed: int | None = None


@dataclasses.dataclass
class GenerationOutput:
  token_ids: list
  text: str
  finish_reason: str
  prompt_tokens: int
  completion_tokens: int


class CharTokenizer:
  def encode(self, text):
    return [ord(c) % 256 for c in text]

  def decode(self, ids):
    return "".join(chr(i) for i in ids)

  def apply_chat_template(self, messages, add_generation_prompt=True):
    text = "".join(f"<{m['role']}>{m['content']}\n" for m in messages)
    if add_generation_prompt:
      text += "<assistant>"
    return self.encode(text)


class DevEngine:
  def __init__(self):
    self.num_forward_passes = 0
    self._lock = threading.Lock()

  def generate(self, prompts, params):
    n = max(p.max_new_tokens for p in params)
    with self._lock:
      self.num_forward_passes += n
    outs = []
    for prompt, p in zip(prompts, params):
      ids = [97 + (sum(prompt) + i) % 26 for i in range(p.max_new_tokens)]
      outs.append(GenerationOutput(ids, "".join(chr(i) for i in ids), "length", len(prompt), len(ids)))
    return outs
