"""Declarative checks on a committed action: each check's code and its parameter schema.

A check looks at the action PLAN committed and the episode so far (the
`StepView`s of `observers`, typed env `info` only) and returns why the action
should not be played, or "". The agent then re-prompts PLAN with the
structure's `action_rejected` text, at most `max_rejections` times a step;
after that the action goes through.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from automem.memory.observers import (
    StepView,
    inventory_counts,
    map_cell,
    open_at,
    position,
    things_near,
)
from automem.memory.structure_fields import Param

CheckFn = Callable[[str, Sequence[StepView], Any], str]


@dataclasses.dataclass(frozen=True)
class CheckDef:
  name: str
  fn: CheckFn
  params: Mapping[str, Param]
  doc: str


# kind -> CheckDef; the one table of action checks.
ACTION_CHECKS: dict[str, CheckDef] = {}


def register_check(name: str, doc: str, **params: Param) -> Callable[[CheckFn], CheckFn]:
  def wrap(fn: CheckFn) -> CheckFn:
    ACTION_CHECKS[name] = CheckDef(name, fn, dict(params), doc)
    return fn

  return wrap


def run_check(spec: Any, action: str, history: Sequence[StepView]) -> str:
  """Why `spec` (an `ActionCheckSpec`) rejects `action`, or ""."""
  if not history:
    return ""
  return ACTION_CHECKS[spec.kind].fn(action, history, spec)


def _key(name: str) -> str:
  return " ".join(name.replace("_", " ").replace("-", " ").split()).lower()


@register_check(
    "requirements", "Rejects a craft/place action whose materials or nearby station are missing.",
    materials=Param("table", {"place_table": {"wood": 1}},
                    "action -> {item: count needed in the inventory}"),
    nearby=Param("table", {"make_wood_pickaxe": ["table"]},
                 "action -> things that must be in view"),
    radius=Param("int", 1, "how close a `nearby` thing must be (steps)", 1, 10))
def requirements(action: str, history: Sequence[StepView], spec: Any) -> str:
  info = history[-1].info
  key = _key(action)
  inv = inventory_counts(info)
  missing = []
  for act, needs in spec.param("materials").items():
    if _key(act) == key and isinstance(needs, Mapping):
      missing += [f"{n - inv.get(item, 0)} more {item}" for item, n in needs.items()
                  if inv.get(item, 0) < n]
  radius = int(spec.param("radius"))
  near = {n for n, d, _ in things_near(info) if d <= radius}
  for act, things in spec.param("nearby").items():
    if _key(act) == key:
      missing += [f"a {t} within {radius} step(s)" for t in things if t not in near]
  return f"it needs {', '.join(missing)}." if missing else ""


@register_check(
    "sleep_threat", "Rejects sleeping while a hostile creature is near.",
    sleep=Param("list", ["sleep"], "actions that mean sleeping", 1, 8),
    hostile=Param("list", ["zombie", "skeleton"], "name parts of hostile creatures", 1, 64),
    radius=Param("int", 4, "steps within which a hostile blocks sleeping", 1, 20))
def sleep_threat(action: str, history: Sequence[StepView], spec: Any) -> str:
  if _key(action) not in {_key(a) for a in spec.param("sleep")}:
    return ""
  radius = int(spec.param("radius"))
  for name, dist, where in things_near(history[-1].info):
    if 0 < dist <= radius and any(h.lower() in name.lower() for h in spec.param("hostile")):
      return f"a {name} is {dist} step(s) {where}; deal with it before sleeping."
  return ""


@register_check(
    "noop_streak", "Rejects another do-nothing action after N in a row.",
    actions=Param("list", ["noop", "wait"], "actions that count as doing nothing", 1, 32),
    max_in_row=Param("int", 3, "do-nothing actions allowed in a row", 1, 100))
def noop_streak(action: str, history: Sequence[StepView], spec: Any) -> str:
  idle = {_key(a) for a in spec.param("actions")}
  if _key(action) not in idle:
    return ""
  streak = 0
  for view in reversed(history):
    if view.action is None or _key(view.action) not in idle:
      break
    streak += 1
  limit = int(spec.param("max_in_row"))
  return f"that would be {streak + 1} do-nothing actions in a row." if streak >= limit else ""


_DELTAS = {"north": (0, -1), "south": (0, 1), "east": (1, 0), "west": (-1, 0),
           "northeast": (1, -1), "northwest": (-1, -1), "southeast": (1, 1), "southwest": (-1, 1)}


@register_check(
    "wall_move", "Rejects a move into a wall or rock on the NetHack/MiniHack map.",
    moves=Param("table", {k: f"{dx},{dy}" for k, (dx, dy) in _DELTAS.items()},
                "move action -> \"dx,dy\" (x east, y south)"),
    blocking=Param("str", "|- ", "map characters that cannot be entered (a boulder can be "
                   "pushed, so it is not listed by default)"))
def wall_move(action: str, history: Sequence[StepView], spec: Any) -> str:
  info = history[-1].info
  pos = position(info)
  if pos is None or not info.get("map"):
    return ""
  for act, delta in spec.param("moves").items():
    if _key(act) == _key(action):
      dx, dy = (int(v) for v in str(delta).split(","))
      x, y = pos[0] + dx, pos[1] + dy
      ch = map_cell(info, x, y)
      if ch in spec.param("blocking") and not open_at(info, x, y, blocking=ch):
        what = "solid rock or unexplored" if ch == " " else f"'{ch}'"
        return f"the square {act} of you is {what} and cannot be entered."
  return ""
