"""The helper-observer library: each observer's code and its parameter schema, in one place.

An observer is a pure function of the episode so far (a list of `StepView`,
one per env step, with the env's typed `info`) that returns a short text,
or "" when it has nothing to say. A structure enables observers by name
(`ObserverSpec`); their text goes into the {helpers} placeholder of the
phases they list, a harness-maintained file (`HarnessFileSpec`) or a mode's
condition (`ModeSpec.when`). Observers read typed `info` fields, never the
rendered observation text:

  Crafter        info.inventory {item: n}, info.vitals {health, food, drink, energy},
                 info.position [row, col], info.view [[cell name]] (7 x 9, you at the centre)
  NetHack/MH     info.vitals {x, y, hp, max_hp, depth, hunger, ...}, info.inventory [line],
                 info.nearby [{name, direction, distance, x, y}], info.map [row text],
                 info.awaiting ("" | "direction" | "menu" | "yes_no" | "item" | "text" |
                 "position")
  every game     StepView.achievements (unlocked so far), .valid_action, .reward

Every parameter is declared with `Param` beside the observer's code; the
structure validator and the reviewer's field reference read these schemas.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from automem.memory.structure_fields import Param


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
  achievements: tuple[str, ...] = ()


ObserverFn = Callable[[Sequence[StepView], Any], str]


@dataclasses.dataclass(frozen=True)
class ObserverDef:
  """A registered observer: its function, parameter schema and a one-line doc."""

  name: str
  fn: ObserverFn
  params: Mapping[str, Param]
  doc: str


# name -> ObserverDef; the one table of observers (validation and docs read it).
OBSERVERS: dict[str, ObserverDef] = {}


def register_observer(name: str, doc: str = "", **params: Param) -> Callable[[ObserverFn],
                                                                             ObserverFn]:
  """Registers an observer with its parameter schema (decorator)."""

  def wrap(fn: ObserverFn) -> ObserverFn:
    OBSERVERS[name] = ObserverDef(name, fn, dict(params), doc or (fn.__doc__ or "").split("\n")[0])
    return fn

  return wrap


def available_observers() -> tuple[str, ...]:
  return tuple(sorted(OBSERVERS))


def run_observer(spec: Any, history: Sequence[StepView]) -> str:
  """The text of one observer spec (anything with `.name` and `.param(key)`)."""
  d = OBSERVERS.get(spec.name)
  if d is None:
    raise ValueError(f"no helper observer named {spec.name!r}; known: {available_observers()}")
  return d.fn(history, spec) if history else ""


def run_observers(specs: Sequence[Any], history: Sequence[StepView]) -> str:
  """The joined text of the observers `specs` (each an `ObserverSpec`) for `history`."""
  return "\n".join(t for t in (run_observer(s, history) for s in specs) if t)


# --- typed info helpers ------------------------------------------------------------------------

_COMPASS = {
    (0, -1): "north", (0, 1): "south", (1, 0): "east", (-1, 0): "west",
    (1, -1): "northeast", (-1, -1): "northwest", (1, 1): "southeast", (-1, 1): "southwest",
}
_CRAFTER_CENTER = (3, 4)  # the player's (row, column) in info.view


def position(info: Mapping[str, Any]) -> tuple[int, int] | None:
  """The player's (x, y) (east, south) from Crafter's position or NLE's vitals."""
  pos = info.get("position")
  if isinstance(pos, list | tuple) and len(pos) == 2:
    return int(pos[1]), int(pos[0])  # Crafter stores (row, col)
  v = info.get("vitals")
  if isinstance(v, Mapping) and "x" in v and "y" in v:
    return int(v["x"]), int(v["y"])
  return None


def compass(dx: int, dy: int) -> str:
  sx, sy = (dx > 0) - (dx < 0), (dy > 0) - (dy < 0)
  if abs(dx) > 2 * abs(dy):
    sy = 0
  elif abs(dy) > 2 * abs(dx):
    sx = 0
  return _COMPASS.get((sx, sy), "here")


def inventory_counts(info: Mapping[str, Any]) -> dict[str, int]:
  """{item: count}: Crafter's dict as is; NetHack's lines counted by their text."""
  inv = info.get("inventory")
  if isinstance(inv, Mapping):
    return {str(k): int(v) for k, v in inv.items() if v}
  if isinstance(inv, list | tuple):
    out: dict[str, int] = {}
    for line in inv:
      item = str(line).split(": ", 1)[-1]
      out[item] = out.get(item, 0) + 1
    return out
  return {}


def things_near(info: Mapping[str, Any]) -> list[tuple[str, int, str]]:
  """(name, distance, direction) of what is in view: Crafter's view grid or NLE's nearby list."""
  out = []
  view = info.get("view")
  if isinstance(view, list | tuple) and view:
    cr, cc = _CRAFTER_CENTER
    for r, row in enumerate(view):
      for c, name in enumerate(row):
        if (r, c) != (cr, cc):
          out.append((str(name), max(abs(r - cr), abs(c - cc)), compass(c - cc, r - cr)))
  for e in info.get("nearby") or ():
    if isinstance(e, Mapping) and "name" in e:
      out.append((str(e["name"]), int(e.get("distance", 0)), str(e.get("direction", "?"))))
  out.sort(key=lambda t: t[1])
  return out


def map_cell(info: Mapping[str, Any], x: int, y: int) -> str:
  """The NLE map character at (x, y) (" " outside the map or when there is none)."""
  rows = info.get("map")
  if isinstance(rows, list | tuple) and 0 <= y < len(rows) and 0 <= x < len(rows[y]):
    return str(rows[y][x])
  return " "


def _matches(name: str, patterns: Sequence[str]) -> bool:
  low = name.lower()
  return any(p.lower() in low for p in patterns)


# --- observers ---------------------------------------------------------------------------------


def state_key(view: StepView) -> Any:
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


def _unchanged_steps(history: Sequence[StepView]) -> int:
  n = 0
  for prev, cur in zip(reversed(history[:-1]), reversed(history[1:])):
    if state_key(cur) != state_key(prev) or cur.reward != 0:
      break
    n += 1
  return n


@register_observer(
    "stagnation", "Warns when the game state has not changed for a few steps.",
    min_unchanged=Param("int", 1, "steps without change before the note", 1, 100),
    strong_after=Param("int", 3, "steps without change before the strong warning", 1, 1000))
def stagnation(history: Sequence[StepView], spec: Any) -> str:
  unchanged = _unchanged_steps(history)
  if unchanged < int(spec.param("min_unchanged")):
    return ""
  if unchanged >= int(spec.param("strong_after")):
    return (f"WARNING: nothing has changed for {unchanged} steps. Your last actions had no "
            "effect; do something different.")
  return f"Note: the last action changed nothing ({unchanged} step(s) without change)."


@register_observer(
    "repetition", "Warns when one action took most of the recent steps.",
    window=Param("int", 8, "how many recent actions to look at", 2, 200),
    min_repeats=Param("int", 4, "repeats of one action that trigger the note", 2, 200))
def repetition(history: Sequence[StepView], spec: Any) -> str:
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
_BAD_HUNGER = ("hungry", "weak", "fainting", "fainted", "starved")


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


@register_observer(
    "vitals", "Warns when a vital sign is low (two levels) or NetHack hunger is bad.",
    threshold=Param("float", 0.3, "fraction of the maximum below which a vital is low", 0, 1),
    critical=Param("float", 0.0, "fraction below which it is critical (0 = no second level)",
                   0, 1))
def vitals(history: Sequence[StepView], spec: Any) -> str:
  threshold, critical = float(spec.param("threshold")), float(spec.param("critical"))
  info = history[-1].info
  low, crit = [], []
  for name, (value, top) in vital_levels(info).items():
    if top <= 0:
      continue
    text = f"{name} {value:g}/{top:g}"
    if value / top < critical:
      crit.append(text)
    elif value / top < threshold:
      low.append(text)
  v = info.get("vitals")
  hunger = v.get("hunger") if isinstance(v, Mapping) else None
  if isinstance(hunger, str) and hunger.strip().lower() in _BAD_HUNGER:
    low.append(f"hunger status {hunger.strip()}")
  parts = []
  if crit:
    parts.append("CRITICAL: " + ", ".join(crit) + ". Fix this before anything else.")
  if low:
    parts.append("WARNING: low " + ", ".join(low) + ". Take care of it now.")
  return " ".join(parts)


# Squares one cannot step onto: walls, solid rock / unexplored, iron bars, trees, boulders.
_BLOCKING = set("|- ") | {"0", "`"}


def passable(ch: str) -> bool:
  return ch not in _BLOCKING


def open_at(info: Mapping[str, Any], x: int, y: int, blocking: str = "") -> bool:
  """Whether (x, y) can be entered: its map character (`blocking`: the characters that
  block; default walls, rock and boulders), except that an open door (drawn '|' or '-' like a
  wall) is known from the nearby list."""
  ch = map_cell(info, x, y)
  if (ch not in blocking) if blocking else passable(ch):
    return True
  return any(isinstance(e, Mapping) and e.get("x") == x and e.get("y") == y
             and "door" in str(e.get("name", "")) for e in info.get("nearby") or ())


@register_observer(
    "map_passability", "Which neighbouring squares are open on the NetHack/MiniHack map.",
    radius=Param("int", 1, "how far open runs are measured", 1, 5),
    show_stairs=Param("bool", True, "also list the stairs seen on the map"))
def map_passability(history: Sequence[StepView], spec: Any) -> str:
  info = history[-1].info
  pos = position(info)
  if pos is None or not info.get("map"):
    return ""
  x, y = pos
  radius = int(spec.param("radius"))
  open_dirs, blocked = [], []
  for (dx, dy), name in _COMPASS.items():
    (open_dirs if open_at(info, x + dx, y + dy) else blocked).append(name)
  parts = [f"Passable next to you: {', '.join(open_dirs) or 'none'}"
           f"; blocked: {', '.join(blocked) or 'none'}."]
  if radius > 1:
    far = []
    for (dx, dy), name in _COMPASS.items():
      steps = 0
      for k in range(1, radius + 1):
        if not open_at(info, x + k * dx, y + k * dy):
          break
        steps = k
      if steps:
        far.append(f"{name} {steps}")
    if far:
      parts.append("Open run lengths: " + ", ".join(far) + ".")
  if spec.param("show_stairs"):
    stairs = []
    for cy, row in enumerate(info["map"]):
      for cx, ch in enumerate(row):
        if ch in "<>":
          kind = "down" if ch == ">" else "up"
          stairs.append(f"stairs {kind} at x={cx}, y={cy} ({cx - x:+d} east, {cy - y:+d} south)")
    if stairs:
      parts.append("Seen: " + "; ".join(stairs) + ".")
  return " ".join(parts)


@register_observer("inventory_change", "What the last step added to or took from the inventory.")
def inventory_change(history: Sequence[StepView], spec: Any) -> str:
  if len(history) < 2:
    return ""
  a, b = inventory_counts(history[-2].info), inventory_counts(history[-1].info)
  diff = [f"{b.get(k, 0) - a.get(k, 0):+d} {k}" for k in sorted(set(a) | set(b))
          if a.get(k, 0) != b.get(k, 0)]
  return "Inventory change: " + ", ".join(diff) + "." if diff else ""


@register_observer(
    "action_failures", "Warns after several actions in a row that failed or changed nothing.",
    min_streak=Param("int", 3, "failed or ineffective actions in a row before the warning",
                     1, 100))
def action_failures(history: Sequence[StepView], spec: Any) -> str:
  streak = 0
  for prev, cur in zip(reversed(history[:-1]), reversed(history[1:])):
    if cur.valid_action and (state_key(cur) != state_key(prev) or cur.reward != 0):
      break
    streak += 1
  if streak < int(spec.param("min_streak")):
    return ""
  return (f"WARNING: your last {streak} actions failed or had no effect "
          f"({', '.join(str(s.action) for s in history[-streak:][-4:])}). Change your approach.")


@register_observer(
    "threat", "Hostile creatures and projectiles within a radius.",
    radius=Param("int", 3, "steps within which a creature counts as a threat", 1, 20),
    hostile=Param("list", ["zombie", "skeleton"], "name parts of hostile creatures", 0, 64),
    projectiles=Param("list", ["arrow"], "name parts of projectiles", 0, 64))
def threat(history: Sequence[StepView], spec: Any) -> str:
  radius = int(spec.param("radius"))
  hostile, shots = list(spec.param("hostile")), list(spec.param("projectiles"))
  near = [(n, d, w) for n, d, w in things_near(history[-1].info) if 0 < d <= radius]
  foes = [f"{n} {d} step(s) {w}" for n, d, w in near if _matches(n, hostile)]
  flying = [f"{n} {d} step(s) {w}" for n, d, w in near if _matches(n, shots)]
  parts = []
  if foes:
    parts.append("THREAT: " + "; ".join(foes) + ".")
  if flying:
    parts.append("Incoming: " + "; ".join(flying) + ".")
  return " ".join(parts)


def _progress_marks(view: StepView) -> tuple[int, frozenset[str], int]:
  v = view.info.get("vitals")
  depth = int(v.get("depth", 0)) if isinstance(v, Mapping) else 0
  return len(view.achievements), frozenset(inventory_counts(view.info)), depth


@register_observer(
    "progress_stagnation", "Warns when no new item, achievement or level came for N steps.",
    steps=Param("int", 25, "steps without progress before the warning", 2, 5000))
def progress_stagnation(history: Sequence[StepView], spec: Any) -> str:
  limit = int(spec.param("steps"))
  best_ach, seen, best_depth = _progress_marks(history[0])
  last = 0
  for i, view in enumerate(history[1:], 1):
    ach, items, depth = _progress_marks(view)
    if ach > best_ach or depth > best_depth or not items <= seen or view.reward > 0:
      last = i
    best_ach, best_depth, seen = max(best_ach, ach), max(best_depth, depth), seen | items
  idle = len(history) - 1 - last
  if idle < limit:
    return ""
  return (f"WARNING: no new item, achievement or level for {idle} steps. "
          "Your current plan is not working; pick a different goal.")


@register_observer(
    "noop_streak", "Warns after several do-nothing actions in a row.",
    actions=Param("list", ["noop", "wait", "search"], "actions that count as doing nothing",
                  1, 32),
    min_streak=Param("int", 3, "such actions in a row before the warning", 1, 100))
def noop_streak(history: Sequence[StepView], spec: Any) -> str:
  idle = {a.lower() for a in spec.param("actions")}
  streak = 0
  for view in reversed(history):
    if view.action is None or view.action.lower() not in idle:
      break
    streak += 1
  if streak < int(spec.param("min_streak")):
    return ""
  return f"Note: {streak} do-nothing actions in a row ('{history[-1].action}'). Act."


@register_observer(
    "oscillation", "Warns when you keep moving between the same few positions.",
    window=Param("int", 8, "recent steps looked at", 4, 100),
    max_positions=Param("int", 2, "at most this many distinct positions counts as oscillating",
                        1, 10))
def oscillation(history: Sequence[StepView], spec: Any) -> str:
  window = int(spec.param("window"))
  if len(history) < window + 1:
    return ""
  recent = [position(v.info) for v in history[-window:]]
  if any(p is None for p in recent):
    return ""
  distinct = sorted(set(recent))  # type: ignore[arg-type]
  if len(distinct) > int(spec.param("max_positions")) or len(distinct) < 2:
    return ""
  where = ", ".join(f"({x},{y})" for x, y in distinct)
  return (f"WARNING: you have moved back and forth between {where} for {window} steps. "
          "Commit to one direction.")


@register_observer(
    "next_goal", "The next unmet goal of a tech tree, with what it needs.",
    order=Param("list", ["collect_wood", "place_table", "make_wood_pickaxe"],
                "goals in the order to reach them (achievement names)", 1, 64),
    needs=Param("table", {"place_table": "1 wood, on grass/sand/path"},
                "goal -> what it needs (shown with the goal)"))
def next_goal(history: Sequence[StepView], spec: Any) -> str:
  done = set(history[-1].achievements)
  needs = spec.param("needs")
  for goal in spec.param("order"):
    if goal not in done:
      need = needs.get(goal)
      return f"Next goal: {goal}" + (f" (needs {need})." if need else ".")
  return "All listed goals are done."


@register_observer(
    "status_block", "A status block: vitals, position, level and the inventory.",
    inventory=Param("bool", True, "include the inventory"))
def status_block(history: Sequence[StepView], spec: Any) -> str:
  info = history[-1].info
  lines = [f"step {len(history) - 1}"]
  levels = vital_levels(info)
  if levels:
    lines.append("vitals: " + ", ".join(f"{k} {v:g}/{m:g}" for k, (v, m) in levels.items()))
  v = info.get("vitals")
  if isinstance(v, Mapping):
    extra = [f"{k} {v[k]}" for k in ("depth", "xp_level", "hunger") if k in v]
    if extra:
      lines.append(", ".join(extra))
  pos = position(info)
  if pos is not None:
    lines.append(f"position x={pos[0]}, y={pos[1]}")
  if spec.param("inventory"):
    inv = inventory_counts(info)
    lines.append("inventory: " + (", ".join(f"{k} x{n}" for k, n in sorted(inv.items()))
                                  or "empty"))
  return "\n".join(lines)


@register_observer("inventory_list", "The inventory, one item per line (for a harness file).")
def inventory_list(history: Sequence[StepView], spec: Any) -> str:
  inv = history[-1].info.get("inventory")
  if isinstance(inv, Mapping):
    return "\n".join(f"{k}: {v}" for k, v in sorted(inv.items()) if v) or "(empty)"
  return "\n".join(str(x) for x in inv or ()) or "(empty)"


@register_observer(
    "checklist", "A checklist of goals: done ones ticked (for a harness-maintained file).",
    items=Param("list", ["collect_wood", "place_table"], "goals (achievement names)", 1, 64))
def checklist(history: Sequence[StepView], spec: Any) -> str:
  done = set(history[-1].achievements)
  return "\n".join(f"[{'x' if g in done else ' '}] {g}" for g in spec.param("items"))


@register_observer(
    "stairs", "Direction and distance of the nearest stairs or exit in view.",
    targets=Param("list", ["staircase down"], "name parts of what to look for", 1, 16))
def stairs(history: Sequence[StepView], spec: Any) -> str:
  info = history[-1].info
  found = [(n, d, w) for n, d, w in things_near(info) if _matches(n, spec.param("targets"))]
  pos = position(info)
  if not found and pos is not None and info.get("map"):
    # The NLE map shows '>' even when the nearby list dropped it.
    x0, y0 = pos
    for y, row in enumerate(info["map"]):
      for x, ch in enumerate(row):
        if ch == ">":
          found.append(("staircase down", max(abs(x - x0), abs(y - y0)), compass(x - x0, y - y0)))
    found.sort(key=lambda t: t[1])
  if not found:
    return "No stairs or exit in view: explore."
  n, d, w = found[0]
  return f"Nearest {n}: {d} step(s) {w}."


_MOVES = {name: delta for delta, name in _COMPASS.items()}


@register_observer(
    "visit_counts", "How often you stood on each neighbouring square; the least-visited way.",
    radius=Param("int", 1, "ring of squares counted (1 = the eight neighbours)", 1, 3))
def visit_counts(history: Sequence[StepView], spec: Any) -> str:
  visits: dict[tuple[int, int], int] = {}
  for view in history:
    p = position(view.info)
    if p is not None:
      visits[p] = visits.get(p, 0) + 1
  info = history[-1].info
  pos = position(info)
  if pos is None:
    return ""
  r = int(spec.param("radius"))
  has_map = bool(info.get("map"))
  options = []
  for name, (dx, dy) in _MOVES.items():
    x, y = pos[0] + dx, pos[1] + dy
    if has_map and not open_at(info, x, y):
      continue
    seen = sum(visits.get((x + k * dx, y + k * dy), 0) for k in range(r))
    options.append((seen, name))
  if not options:
    return ""
  options.sort()
  return (f"Visits here: {visits.get(pos, 0)}. Least-visited open direction: {options[0][1]} "
          f"({options[0][0]} visit(s)).")


@register_observer(
    "prompt_active", "Says when the game waits for an answer (a direction, a menu choice).",
    kinds=Param("list", ["direction", "menu", "yes_no", "item", "text", "position"],
                "which kinds of question count", 1, 8))
def prompt_active(history: Sequence[StepView], spec: Any) -> str:
  kind = history[-1].info.get("awaiting") or ""
  if kind not in spec.param("kinds"):
    return ""
  return f"The game is waiting for a {kind.replace('_', '/')} answer; reply to it first."
