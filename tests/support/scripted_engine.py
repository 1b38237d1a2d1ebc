"""A generation engine whose answer depends only on the prompt tokens: the stand-in, behind the
SGLang-protocol test server, for a GPU-served model that cannot run here.

Its answers commit one of `ACTIONS` (actions of Crafter and MiniHack; an unknown
one is refused by the agent and the PLAN falls back), so episodes played with it
depend on their observations and memory, and the same prompts always give the
same episodes whichever process or server plays them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time

ACTIONS = ("Move West", "Move East", "Do", "Noop", "north", "east", "south", "west")


@dataclasses.dataclass
class ScriptedOutput:
  text: str
  token_ids: list[int]
  completion_tokens: int
  finish_reason: str = "stop"


class PromptHashEngine:
  """`generate(prompts, params)` as `GenerationEngine` has it; `delay_s` per call."""

  def __init__(self, tokenizer, delay_s: float = 0.05):
    self.tokenizer = tokenizer
    self.delay_s = delay_s
    self.calls = 0

  def generate(self, prompts, params):
    self.calls += 1
    time.sleep(self.delay_s)
    outs = []
    for prompt in prompts:
      h = int(hashlib.sha256(str(list(prompt)).encode()).hexdigest()[:8], 16)
      text = f"<|ACTION|>{ACTIONS[h % len(ACTIONS)]}<|END|><|DONE|>"
      ids = list(self.tokenizer.encode(text))
      outs.append(ScriptedOutput(text, ids, len(ids)))
    return outs
