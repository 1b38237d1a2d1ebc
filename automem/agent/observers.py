"""Helper observers: short warnings computed from the episode so far.

The structure turns observers on (`ObserverSpec`: name, phases, params; the
names and parameters are `automem.memory.OBSERVERS`) and their text goes
into the {helpers} placeholder of the phases they list. Each observer is a
pure function of the episode's `StepView` history, so a trajectory replays
to the same prompts.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any


@dataclasses.dataclass(frozen=True)
class StepView:
  """What observers know about one env step: the action taken and what followed.

  The first view of an episode (after the reset) has `action=None`.
  """

  action: str | None
  reward: float
  observation_text: str
  info: Mapping[str, Any]
  valid_action: bool = True


ObserverFn = Callable[[Sequence[StepView], Any], str]
_OBSERVERS: dict[str, ObserverFn] = {}


def register_observer(name: str) -> Callable[[ObserverFn], ObserverFn]:
  """Registers an observer function under `name` (decorator)."""

  def wrap(fn: ObserverFn) -> ObserverFn:
    _OBSERVERS[name] = fn
    return fn

  return wrap


def available_observers() -> tuple[str, ...]:
  return tuple(sorted(_OBSERVERS))


def run_observers(specs: Sequence[Any], history: Sequence[StepView]) -> str:
  """The joined text of the observers `specs` (each an `ObserverSpec`) for `history`."""
  lines = []
  for spec in specs:
    fn = _OBSERVERS.get(spec.name)
    if fn is None:
      raise ValueError(f"no helper observer named {spec.name!r}; known: {available_observers()}")
    text = fn(history, spec)
    if text:
      lines.append(text)
  return "\n".join(lines)


def _state_key(view: StepView) -> Any:
  """What "nothing changed" compares: the game state when the info has it, else the text.

  Crafter's text changes with the daylight every step and NetHack's status line
  with the turn counter, so the text alone would never look unchanged.
  """
  info = view.info
  vitals = info.get("vitals")
  if "position" in info:  # Crafter
    return (repr(info.get("position")), info.get("facing"), repr(info.get("inventory")),
            repr(vitals))
  if isinstance(vitals, Mapping) and "x" in vitals:  # NetHack / MiniHack
    keep = {k: v for k, v in vitals.items() if k != "time"}
    return (repr(keep), repr(info.get("inventory")), info.get("message"))
  return view.observation_text


@register_observer("stagnation")
def stagnation(history: Sequence[StepView], spec: Any) -> str:
  """Warns when the game state has not changed for `min_unchanged` steps."""
  min_unchanged = int(spec.param("min_unchanged"))
  strong_after = int(spec.param("strong_after"))
  unchanged = 0
  for prev, cur in zip(reversed(history[:-1]), reversed(history[1:])):
    if _state_key(cur) != _state_key(prev) or cur.reward != 0:
      break
    unchanged += 1
  if unchanged < min_unchanged:
    return ""
  if unchanged >= strong_after:
    return (f"WARNING: nothing has changed for {unchanged} steps. Your last actions had no "
            "effect; do something different.")
  return f"Note: the last action changed nothing ({unchanged} step(s) without change)."


@register_observer("repetition")
def repetition(history: Sequence[StepView], spec: Any) -> str:
  """Warns when one action took `min_repeats` of the last `window` steps."""
  window, min_repeats = int(spec.param("window")), int(spec.param("min_repeats"))
  actions = [s.action for s in history if s.action is not None][-window:]
  if not actions:
    return ""
  top = max(set(actions), key=actions.count)
  count = actions.count(top)
  if count < min_repeats:
    return ""
  return (f"Note: '{top}' was {count} of your last {len(actions)} actions. "
          "Check that it still makes progress.")


# Crafter's vitals run 0..9; NetHack's HP has its own maximum.
_CRAFTER_VITALS_MAX = 9.0


def vital_levels(info: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
  """`{name: (value, max)}` for every numeric vital an observation's info carries."""
  out: dict[str, tuple[float, float]] = {}
  vitals = info.get("vitals")
  if not isinstance(vitals, Mapping):
    return out
  if isinstance(vitals.get("hp"), int | float) and isinstance(vitals.get("max_hp"), int | float):
    out["HP"] = (float(vitals["hp"]), float(vitals["max_hp"]))
  for name in ("health", "food", "drink", "energy"):
    value = vitals.get(name)
    if isinstance(value, int | float) and not isinstance(value, bool):
      out[name] = (float(value), _CRAFTER_VITALS_MAX)
  return out


_BAD_HUNGER = ("hungry", "weak", "fainting", "fainted", "starved")


@register_observer("vitals")
def vitals(history: Sequence[StepView], spec: Any) -> str:
  """Warns when a vital sign is below `threshold` of its maximum (or NetHack hunger is bad)."""
  if not history:
    return ""
  threshold = float(spec.param("threshold"))
  info = history[-1].info
  low = [f"{name} {value:g}/{top:g}" for name, (value, top) in vital_levels(info).items()
         if top > 0 and value / top < threshold]
  v = info.get("vitals")
  hunger = v.get("hunger") if isinstance(v, Mapping) else None
  if isinstance(hunger, str) and hunger.strip().lower() in _BAD_HUNGER:
    low.append(f"hunger status {hunger.strip()}")
  if not low:
    return ""
  return "WARNING: low " + ", ".join(low) + ". Take care of it now."


_MAP_HEADER = re.compile(r"^map \(you are the @ at x=(\d+), y=(\d+)")
_NAMES = {
    (0, -1): "north", (0, 1): "south", (1, 0): "east", (-1, 0): "west",
    (1, -1): "northeast", (-1, -1): "northwest", (1, 1): "southeast", (-1, 1): "southwest",
}
# Squares one cannot step onto: walls, solid rock / unexplored, iron bars, trees, boulders.
_BLOCKING = set("|-# ") | {"0", "`"}
_CORRIDOR = "#"


def _map_from_text(text: str) -> tuple[list[str], int, int] | None:
  """The NLE map rows and the player's (x, y) from an observation text."""
  lines = text.split("\n")
  for i, line in enumerate(lines):
    m = _MAP_HEADER.match(line)
    if m:
      return lines[i + 1:i + 22], int(m.group(1)), int(m.group(2))
  return None


def _passable(ch: str) -> bool:
  return ch not in _BLOCKING or ch == _CORRIDOR


@register_observer("map_passability")
def map_passability(history: Sequence[StepView], spec: Any) -> str:
  """Which neighbouring squares (within `radius`) are open, read off the NLE map.

  A '#' is a corridor (open) in NetHack maps; walls '|' and '-', rock ' '
  and boulders '0'/'`' block. Silent for observations without a map (Crafter).
  """
  if not history:
    return ""
  found = _map_from_text(history[-1].observation_text)
  if found is None:
    return ""
  rows, x, y = found
  radius = int(spec.param("radius"))
  show_stairs = bool(spec.param("show_stairs"))

  def at(cx: int, cy: int) -> str:
    if 0 <= cy < len(rows) and 0 <= cx < len(rows[cy]):
      return rows[cy][cx]
    return " "

  open_dirs, blocked = [], []
  for (dx, dy), name in _NAMES.items():
    (open_dirs if _passable(at(x + dx, y + dy)) else blocked).append(name)
  parts = [f"Passable next to you: {', '.join(open_dirs) or 'none'}"
           f"; blocked: {', '.join(blocked) or 'none'}."]
  if radius > 1:
    far = []
    for (dx, dy), name in _NAMES.items():
      steps = 0
      for k in range(1, radius + 1):
        if not _passable(at(x + k * dx, y + k * dy)):
          break
        steps = k
      if steps:
        far.append(f"{name} {steps}")
    if far:
      parts.append("Open run lengths: " + ", ".join(far) + ".")
  if show_stairs:
    stairs = []
    for cy, row in enumerate(rows):
      for cx, ch in enumerate(row):
        if ch in "<>":
          kind = "down" if ch == ">" else "up"
          stairs.append(f"stairs {kind} at x={cx}, y={cy} ({cx - x:+d} east, {cy - y:+d} south)")
    if stairs:
      parts.append("Seen: " + "; ".join(stairs) + ".")
  return " ".join(parts)
