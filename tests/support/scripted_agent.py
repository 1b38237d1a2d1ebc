"""A scripted agent model whose play depends on a structure feature (for Loop 1's tests).

It stands in for a strong agent model behind the ordinary `LLMClient`
interface (the runner cannot tell it from a real backend). On MiniHack it
finds the staircase in the PLAN prompt (the "staircase down: N steps DIR"
line, else the `@` and `>` of the map) and how well it walks there depends
on the memory file index it is shown:

- a file named `route.txt` in the index: always the right direction;
- a file named `blocker.txt`: always `search` (never moves);
- neither: the right direction with probability `skill`, else a random one,
  drawn from the request's sampling seed (so paired arms share their luck).

LOG turns (no ACTION op in the system prompt's command reference) answer
`<|DONE|>`. The agent's sampling seeds differ between episodes and turns, so
outcomes vary from seed to seed as real play does.
"""

from __future__ import annotations

import random
import re

from automem.llm.client import LLMClient
from automem.llm.types import LLMRequest, LLMResult

DIRECTIONS = ("north", "south", "east", "west", "northeast", "northwest", "southeast",
              "southwest")
_GOAL = re.compile(r"staircase down: \d+ steps? (\w+)")
_NAMES = {(0, -1): "north", (0, 1): "south", (1, 0): "east", (-1, 0): "west",
          (1, -1): "northeast", (-1, -1): "northwest", (1, 1): "southeast", (-1, 1): "southwest"}


def goal_direction(text: str) -> str | None:
  """The direction of the staircase: from the nearby list, else from the map's @ and >."""
  found = _GOAL.findall(text)
  if found:
    return found[-1]
  at = stairs = None
  for y, line in enumerate(text.splitlines()):
    if "@" in line and at is None:
      at = (line.index("@"), y)
    if ">" in line and stairs is None and "<|" not in line:
      stairs = (line.index(">"), y)
  if at is None or stairs is None or at == stairs:
    return None
  dx, dy = stairs[0] - at[0], stairs[1] - at[1]
  return _NAMES[((dx > 0) - (dx < 0), (dy > 0) - (dy < 0))]


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
    goal = goal_direction(req.messages[-1]["content"]) or goal_direction(text)
    rng = random.Random(req.seed)
    if "blocker.txt" in text:
      action = "search"
    elif goal and ("route.txt" in text or rng.random() < self.skill):
      action = goal
    else:
      action = rng.choice(DIRECTIONS)
    return LLMResult(f"<|ACTION|>{action}<|END|>", "stop", prompt_tokens=len(text) // 4,
                     completion_tokens=5)
