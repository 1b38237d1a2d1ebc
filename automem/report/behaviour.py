"""The paper's behavioural statistics of one episode, computed from its trajectory.

- unproductive actions: `stuck` steps repeat the action of the two steps
  before with no reward and no progression gained over the three;
  `oscillating` steps undo the previous move (west after east, ...);
- redundant writes: APPEND / UPSERT / WRITE commands that ran but whose text
  was already a line of the target file (tracked through the recorded
  memory diffs, from the header's initial memory);
- empty searches: SEARCH commands that ran and matched nothing;
- context tokens per step: prompt tokens of all turns / env steps;
- memory ops by kind, failed commands, fallback actions.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from automem.memory import OPS, apply_diff

_OPPOSITE = {}
for _a, _b in (("north", "south"), ("east", "west"), ("northeast", "southwest"),
               ("northwest", "southeast"), ("up", "down"), ("left", "right")):
  _OPPOSITE[_a], _OPPOSITE[_b] = _b, _a
_REDUNDANT_OPS = ("APPEND", "UPSERT", "WRITE", "UPSERT_MAP")


@dataclasses.dataclass
class Behaviour:
  """Counts of one episode (or a sum over episodes, see `add`)."""

  episodes: int = 0
  steps: int = 0
  stuck: int = 0
  oscillating: int = 0
  fallback: int = 0
  writes: int = 0
  redundant_writes: int = 0
  searches: int = 0
  empty_searches: int = 0
  failed_commands: int = 0
  prompt_tokens: int = 0
  turns: int = 0
  ops: dict[str, int] = dataclasses.field(default_factory=dict)

  def add(self, other: Behaviour) -> Behaviour:
    out = Behaviour()
    for f in dataclasses.fields(self):
      if f.name == "ops":
        total = collections.Counter(self.ops) + collections.Counter(other.ops)
        out.ops = dict(sorted(total.items()))
      else:
        setattr(out, f.name, getattr(self, f.name) + getattr(other, f.name))
    return out

  def rates(self) -> dict[str, float]:
    """Per-step and per-command rates (the figures the report shows)."""
    steps = max(self.steps, 1)
    return {
        "unproductive_rate": (self.stuck + self.oscillating) / steps,
        "stuck_rate": self.stuck / steps, "oscillating_rate": self.oscillating / steps,
        "fallback_rate": self.fallback / steps,
        "redundant_write_rate": self.redundant_writes / max(self.writes, 1),
        "empty_search_rate": self.empty_searches / max(self.searches, 1),
        "context_tokens_per_step": self.prompt_tokens / steps,
        "ops_per_step": sum(self.ops.values()) / steps,
    }


def _move(action: str) -> str:
  """The direction word of a movement action ("Move West" -> "west"), else ""."""
  words = str(action).lower().replace("_", " ").split()
  return words[-1] if words and words[-1] in _OPPOSITE else ""


def _lines(text: str) -> set[str]:
  return {ln.strip() for ln in text.splitlines() if ln.strip()}


def episode_behaviour(trajectory: Mapping[str, Any]) -> Behaviour:
  """The statistics of one trajectory (`read_episode`'s dict)."""
  b = Behaviour(episodes=1)
  steps: Sequence[Mapping[str, Any]] = trajectory["steps"]
  b.steps = len(steps)
  for i, s in enumerate(steps):
    b.fallback += bool(s.get("fallback"))
    if i >= 2:
      window = steps[i - 2:i + 1]
      if (len({w["action"] for w in window}) == 1 and not any(w.get("reward") for w in window)
          and steps[i - 2].get("progression") == s.get("progression")):
        b.stuck += 1
    if i >= 1:
      a, prev = _move(s["action"]), _move(steps[i - 1]["action"])
      if a and prev and _OPPOSITE[prev] == a:
        b.oscillating += 1
  memory = dict((trajectory.get("header") or {}).get("initial_memory") or {})
  ops: collections.Counter[str] = collections.Counter()
  for turn in trajectory["turns"]:
    b.turns += 1
    b.prompt_tokens += int(turn.get("prompt_tokens") or 0)
    seen = {name: _lines(text) for name, text in memory.items()}
    for c in turn.get("commands", ()):
      op = c.get("op") or ""
      if op not in OPS:  # an unparseable fragment
        b.failed_commands += 1
        continue
      ops[op] += 1
      if not c.get("ok"):
        b.failed_commands += 1
        continue
      if op == "SEARCH":
        b.searches += 1
        b.empty_searches += (c.get("meta") or {}).get("matches", 1) == 0
      if op in _REDUNDANT_OPS:
        b.writes += 1
        args = list(c.get("args") or [])
        name, text = (args[0] if args else ""), (args[-1] if args else "")
        if op == "UPSERT" and len(args) >= 3:
          text = f"{args[1]}: {args[2]}"
        new = _lines(text)
        old = seen.setdefault(name, set())
        if new and new <= old:
          b.redundant_writes += 1
        old |= new
    with contextlib.suppress(ValueError):  # a diff that does not fit: keep the tracked state
      memory = apply_diff(memory, turn.get("memory_diff") or {})
  b.ops = dict(sorted(ops.items()))
  return b
