"""A scripted agent model whose play depends on a structure feature (for Loop 1's tests).

It stands in for a strong agent model behind the ordinary `LLMClient`
interface (the runner cannot tell it from a real backend). On MiniHack it
reads the observation in the PLAN prompt ("staircase down: N steps DIR")
and how well it walks there depends on the memory file index it is shown:

- a file named `route.txt` in the index: always the right direction;
- a file named `blocker.txt`: always `search` (never moves);
- neither: the right direction with probability `skill`, else a random one,
  drawn from the request's sampling seed (so paired arms share their luck).

LOG turns (no ACTION op in the system prompt's command reference) answer `<|DONE|>`. The agent's sampling seeds differ between
episodes and turns, so outcomes vary from seed to seed as real play does.
"""

from __future__ import annotations

import random
import re

from automem.llm.client import LLMClient
from automem.llm.types import LLMRequest, LLMResult

DIRECTIONS = ("north", "south", "east", "west", "northeast", "northwest", "southeast",
              "southwest")
_GOAL = re.compile(r"staircase down: \d+ steps? (\w+)")


class StructureSensitiveAgent(LLMClient):
  backend = "scripted"

  def __init__(self, skill: float = 0.5, **kwargs):
    super().__init__(**kwargs)
    self.skill = skill
    self.calls = 0

  async def _call(self, requests: list[LLMRequest]) -> list[LLMResult]:
    return [self._answer(r) for r in requests]

  def _answer(self, req: LLMRequest) -> LLMResult:
    self.calls += 1
    text = "\n".join(m["content"] for m in req.messages or ())
    if "<|ACTION|>" not in req.messages[0]["content"]:  # only PLAN's command reference has it
      return LLMResult("<|DONE|>", "stop", prompt_tokens=len(text) // 4, completion_tokens=3)
    last = req.messages[-1]["content"]
    goal = _GOAL.findall(last) or _GOAL.findall(text)
    rng = random.Random(req.seed)
    if "blocker.txt" in text:
      action = "search"
    elif goal and ("route.txt" in text or rng.random() < self.skill):
      action = goal[-1]
    else:
      action = rng.choice(DIRECTIONS)
    return LLMResult(f"<|ACTION|>{action}<|END|>", "stop", prompt_tokens=len(text) // 4,
                     completion_tokens=5)
