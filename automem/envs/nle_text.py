"""Text observations for NLE-based games (NetHack, MiniHack).

Turns one NLE observation dict into the text an LLM acts on, in fixed sections:

  message:    the message line(s), including those stepped through at --More--,
              or the text of an open menu
  nearby:     a language description of what is around the player: each
              monster, object and notable dungeon feature with its compass
              direction and its step distance (king moves, as the player moves)
  around you: the structure along each of the 8 directions, up to 9 steps:
              walls and corners, doorways, corridors, dark areas, iron bars
              (Boxoban's walls), as runs ("floor 1-3, horizontal wall 4")
  cursor:     where the terminal cursor is on the map and what is there: on the
              player (naming the role) or, at a travel/jump prompt, the picked cell
  map:        the ASCII screen (map area) with the player's coordinates
  status:     NetHack's two bottom lines (HP, Pw, AC, Dlvl, XP, time, hunger,
              conditions)
  inventory:  one line per item, with its letter

Only numpy is needed; the NLE observation keys read are listed in `OBS_KEYS`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

# NLE observation keys the renderer reads.
OBS_KEYS = (
    "glyphs",
    "blstats",
    "tty_chars",
    "tty_cursor",
    "screen_descriptions",
    "inv_letters",
    "inv_strs",
    "misc",
)

MORE = "--More--"
# blstats indices (nle.nethack.NLE_BL_*), fixed by NLE's observation layout.
BL_X, BL_Y = 0, 1
BL_HP, BL_HPMAX, BL_DEPTH, BL_TIME, BL_HUNGER, BL_XP = 10, 11, 12, 20, 21, 18
# Screen descriptions that are scenery, not worth a "nearby" line: the map shows them.
_SCENERY = frozenset({
    "", "stone", "wall", "floor of a room", "dark part of a room", "corridor",
    "lit corridor", "unexplored", "dark area", "iron bars",
})
_SCENERY_GLYPHS: set[int] = set()  # map-symbol glyphs seen with a scenery description
_DIRECTIONS = ("east", "southeast", "south", "southwest", "west", "northwest", "north", "northeast")
HUNGER_NAMES = ("satiated", "not hungry", "hungry", "weak", "fainting", "fainted", "starved")


def _decode(row: np.ndarray) -> str:
  raw = bytes(np.asarray(row, dtype=np.uint8))
  return raw.split(b"\0", 1)[0].decode("latin-1")


def tty_lines(tty_chars: np.ndarray) -> list[str]:
  """The terminal screen as text lines (24 x 80 for NLE)."""
  chars = np.asarray(tty_chars, dtype=np.uint8)
  raw, width = chars.tobytes().decode("latin-1"), chars.shape[1]
  return [raw[i : i + width].rstrip() for i in range(0, len(raw), width)]


def more_text(tty_chars: np.ndarray) -> str | None:
  """The text shown with a --More-- prompt, or None when there is none.

  A --More-- on the top line closes a message; lower down it closes a text
  window drawn over the map, whose lines start at the --More--'s column.
  """
  if MORE.encode() not in np.asarray(tty_chars, dtype=np.uint8).tobytes():
    return None
  lines = tty_lines(tty_chars)
  for r, line in enumerate(lines):
    col = line.find(MORE)
    if col < 0:
      continue
    if r == 0:
      return line[:col].strip()
    window = [lines[i][col:].strip() for i in range(r)]
    return "\n".join(w for w in window if w)
  return None


_MENU_END = re.compile(r"\((?:end|\d+ of \d+)\)\s*$")


def menu_text(lines: list[str]) -> str | None:
  """The text of a menu drawn over the screen, or None when there is none.

  NetHack ends a menu page with "(end)" or "(1 of 2)"; the menu's lines start
  at that marker's column, from the top of the screen down to the marker.
  """
  for r in range(len(lines) - 1, 0, -1):
    m = _MENU_END.search(lines[r])
    if m and lines[r][: m.start()].strip() == "":
      col = m.start()
      window = [line[col:].rstrip() for line in lines[: r + 1]]
      while window and not window[0]:
        window.pop(0)
      return "\n".join(window)
  return None


def prompt_kind(obs: Mapping[str, np.ndarray], position: bool = False) -> str | None:
  """What the game is waiting for: "text", "key", "position" or None (a new command).

  "text": a line of text (engrave, call); "key": a yes/no, item or direction
  question or an open menu; "position": a map cursor (travel, jump), which stays
  until it is confirmed, so a caller that knows it is in one passes `position`.
  NLE's `misc` observation flags the first two; the cursor prompt is known by its
  "(For instructions type a ?)" line.
  """
  misc = obs.get("misc")
  if misc is not None and misc[1]:
    return "text"
  if misc is not None and misc[0]:
    return "key"
  lines = tty_lines(obs["tty_chars"])
  if misc is not None and misc[2] and menu_text(lines) is not None:
    return "key"
  if position or "For instructions type a" in lines[0]:
    return "position"
  return None


def direction(dx: int, dy: int) -> str:
  """Compass direction of an offset on the screen (y grows southwards)."""
  if dx == 0 and dy == 0:
    return "here"
  sector = round(math.atan2(dy, dx) / (math.pi / 4)) % 8
  return _DIRECTIONS[sector]


def nearby_entities(obs: Mapping[str, np.ndarray], limit: int = 20) -> list[dict[str, Any]]:
  """Monsters, objects and notable features on screen, nearest first.

  Each entry has `name` (NetHack's own screen description, e.g. "tame kitten"),
  `direction`, `distance` (king-move steps from the player) and `x`, `y`.
  Every monster and object is listed; a dungeon feature (door, fountain, lava,
  stairs) only at its nearest cell in each direction, so a lava lake is one line
  per direction rather than one per cell.
  """
  from nle import nethack  # the worker has it; imported here to keep this module light

  desc, glyphs = obs["screen_descriptions"], obs["glyphs"]
  px, py = int(obs["blstats"][BL_X]), int(obs["blstats"][BL_Y])
  # Cells with a description (the first byte tells), minus map glyphs already known to be
  # scenery: a map symbol's description never changes, so walls and floor are decoded once.
  described = desc[:, :, 0] != 0
  if _SCENERY_GLYPHS:
    described &= ~np.isin(glyphs, np.fromiter(_SCENERY_GLYPHS, np.int64))
  ys, xs = np.nonzero(described)
  out = []
  for y, x in zip(ys.tolist(), xs.tolist()):
    if x == px and y == py:
      continue
    name = _decode(desc[y, x])
    glyph = int(glyphs[y, x])
    feature = bool(nethack.glyph_is_cmap(glyph))
    if name in _SCENERY:
      if feature:
        _SCENERY_GLYPHS.add(glyph)
      continue
    dx, dy = x - px, y - py
    out.append({"name": name, "direction": direction(dx, dy), "distance": max(abs(dx), abs(dy)), "x": x, "y": y, "feature": feature})
  out.sort(key=lambda e: (e["distance"], e["y"], e["x"]))
  seen: set[tuple[str, str]] = set()
  kept = []
  for e in out:
    if e.pop("feature"):
      if (e["name"], e["direction"]) in seen:
        continue
      seen.add((e["name"], e["direction"]))
    kept.append(e)
  return kept[:limit]


# Names of NetHack 3.6's structural map symbols (defsyms index -> name), as BALROG's text
# names them: NetHack's own description says only "wall" for all eleven wall pieces and
# nothing for unexplored stone. Other symbols (doors, stairs, fountains, lava, bars, ...)
# keep NetHack's own words, the ones the "nearby" section uses.
STRUCTURE_NAMES: dict[int, str] = {
    0: "dark area", 1: "vertical wall", 2: "horizontal wall", 3: "northwest corner",
    4: "northeast corner", 5: "southwest corner", 6: "southeast corner", 7: "cross wall",
    8: "t up wall", 9: "t down wall", 10: "t west wall", 11: "t east wall", 19: "floor",
    20: "dark floor", 21: "corridor", 22: "lit corridor",
}
# Symbols a look along a line stops at (walls, dark area, closed doors, iron bars, tree,
# raised drawbridge): nothing past them is known or reachable that way.
_BLOCKING = frozenset({*range(0, 12), 15, 16, 17, 18, 37, 38})
_STEPS = {
    "north": (0, -1), "northeast": (1, -1), "east": (1, 0), "southeast": (1, 1),
    "south": (0, 1), "southwest": (-1, 1), "west": (-1, 0), "northwest": (-1, -1),
}
REACH = 9  # cells looked at along each direction (BALROG's ray length)


def _cell_name(obs: Mapping[str, np.ndarray], x: int, y: int, cmap_offset: int) -> tuple[str, bool]:
  """(name, blocks the view) of a map cell: structure by its map symbol, else NetHack's words."""
  cmap = int(obs["glyphs"][y, x]) - cmap_offset
  name = STRUCTURE_NAMES.get(cmap) or _decode(obs["screen_descriptions"][y, x]) or "dark area"
  return name, cmap in _BLOCKING


def surroundings(obs: Mapping[str, np.ndarray], reach: int = REACH) -> dict[str, list[tuple[str, int, int]]]:
  """What lies along each of the 8 directions from the player, as runs of equal cells.

  Each direction maps to [(name, first step, last step), ...], looking up to
  `reach` cells and stopping after the first wall, closed door, bars, tree or
  dark area (as BALROG's text does), or at the map's edge.
  """
  from nle import nethack  # the worker has it; imported here to keep this module light

  glyphs = obs["glyphs"]
  px, py = int(obs["blstats"][BL_X]), int(obs["blstats"][BL_Y])
  out: dict[str, list[tuple[str, int, int]]] = {}
  for name, (dx, dy) in _STEPS.items():
    runs: list[tuple[str, int, int]] = []
    for k in range(1, reach + 1):
      x, y = px + k * dx, py + k * dy
      if not (0 <= y < glyphs.shape[0] and 0 <= x < glyphs.shape[1]):
        break
      cell, blocks = _cell_name(obs, x, y, nethack.GLYPH_CMAP_OFF)
      if runs and runs[-1][0] == cell:
        runs[-1] = (cell, runs[-1][1], k)
      else:
        runs.append((cell, k, k))
      if blocks:
        break
    out[name] = runs
  return out


def cursor(obs: Mapping[str, np.ndarray]) -> dict[str, Any] | None:
  """Where the terminal cursor is on the map and what is there; None when it is off the map.

  It sits on the player in normal play (their description names the role) and
  moves over the map while the game asks for a position (travel, jump, look).
  """
  row, col = (int(v) for v in obs["tty_cursor"])
  height, width = obs["glyphs"].shape
  x, y = col, row - 1  # the map starts on the terminal's second line
  if not (0 <= y < height and 0 <= x < width):
    return None
  px, py = int(obs["blstats"][BL_X]), int(obs["blstats"][BL_Y])
  dx, dy = x - px, y - py
  return {
      "x": x, "y": y, "on_player": dx == 0 and dy == 0, "name": _decode(obs["screen_descriptions"][y, x]),
      "direction": direction(dx, dy), "distance": max(abs(dx), abs(dy)),
  }


def _runs_text(runs: list[tuple[str, int, int]]) -> str:
  return ", ".join(f"{n} {a}" if a == b else f"{n} {a}-{b}" for n, a, b in runs) or "(map edge)"


def _cursor_text(c: dict[str, Any]) -> str:
  if c["on_player"]:
    return f"on you ({c['name'] or 'you'})"
  steps = f"{c['distance']} step{'s' if c['distance'] != 1 else ''} {c['direction']}"
  return f"at x={c['x']}, y={c['y']}, {steps} of you: {c['name'] or 'dark area'}"


def inventory_lines(obs: Mapping[str, np.ndarray]) -> list[str]:
  """Inventory as "a: a +1 long sword (weapon in hand)" lines."""
  lines = []
  for letter, text in zip(obs["inv_letters"], obs["inv_strs"]):
    if letter == 0:
      break
    lines.append(f"{chr(int(letter))}: {_decode(text)}")
  return lines


def vitals(obs: Mapping[str, np.ndarray]) -> dict[str, int | str]:
  """Structured vitals from blstats, for helper observers and tests."""
  bl = obs["blstats"]
  hunger = int(bl[BL_HUNGER])
  return {
      "x": int(bl[BL_X]),
      "y": int(bl[BL_Y]),
      "hp": int(bl[BL_HP]),
      "max_hp": int(bl[BL_HPMAX]),
      "depth": int(bl[BL_DEPTH]),
      "xp_level": int(bl[BL_XP]),
      "time": int(bl[BL_TIME]),
      "hunger": HUNGER_NAMES[hunger] if 0 <= hunger < len(HUNGER_NAMES) else str(hunger),
  }


def render(obs: Mapping[str, np.ndarray], messages: list[str] | None = None, nearby_limit: int = 20) -> tuple[str, dict[str, Any]]:
  """Renders an NLE observation as (text, info).

  Args:
    obs: NLE observation with at least the keys in `OBS_KEYS`.
    messages: messages already stepped through at --More-- prompts this step;
      the current top line is appended.
    nearby_limit: most entities listed under "nearby".

  Returns:
    The text observation and a JSON-serialisable info dict.
  """
  lines = tty_lines(obs["tty_chars"])
  msgs = [m for m in (messages or []) if m]
  menu = menu_text(lines)
  top = lines[0].replace(MORE, "").strip()
  if menu is not None:  # the top line belongs to the menu
    msgs.append("menu (answer with its letters; esc closes it):\n" + menu)
  elif top and (not msgs or msgs[-1] != top):
    msgs.append(top)
  message = "\n".join(msgs)
  entities = nearby_entities(obs, nearby_limit)
  vit = vitals(obs)
  inv = inventory_lines(obs)
  # An open menu covers the map; its text is in the message section already.
  map_lines = lines[1:22] if menu is None else ["(covered by the menu above)"]
  nearby = [f"{e['name']}: {e['distance']} step{'s' if e['distance'] != 1 else ''} {e['direction']}" for e in entities]
  around = surroundings(obs)
  where = cursor(obs) if menu is None else None  # over a menu the cursor names no map cell
  parts = [
      "message:\n" + (message or "(none)"),
      "nearby:\n" + ("\n".join(nearby) if nearby else "(nothing notable in view)"),
      f"around you (each direction up to {REACH} steps; numbers are steps):\n"
      + "\n".join(f"{d}: {_runs_text(r)}" for d, r in around.items()),
      *(["cursor:\n" + _cursor_text(where)] if where is not None else []),
      f"map (you are the @ at x={vit['x']}, y={vit['y']}; x grows east, y grows south):\n" + "\n".join(map_lines),
      "status:\n" + "\n".join(lines[22:24]).strip("\n"),
      "inventory:\n" + ("\n".join(inv) if inv else "(empty)"),
  ]
  info = {"message": message, "menu": menu, "nearby": entities, "vitals": vit, "inventory": inv}
  info["around"] = {d: [list(run) for run in r] for d, r in around.items()}
  info["cursor"] = where
  info["map"] = lines[1:22]  # map rows, indexed by y (typed field for observers)
  info["awaiting"] = awaiting_input(obs, top, menu)
  return "\n\n".join(parts), info


def awaiting_input(obs: Mapping[str, np.ndarray], top: str, menu: str | None) -> str:
  """What the game waits for, for helper observers: "menu", "direction", "yes_no", "item",
  "text", "position" or "" (a new command); `prompt_kind` says whether a question is open,
  its top line which kind of key it wants."""
  if menu is not None:
    return "menu"
  kind = prompt_kind(obs)
  if kind is None or kind in ("text", "position"):
    return kind or ""
  low = top.lower()
  if "direction" in low:
    return "direction"
  if "[yn" in low:
    return "yes_no"
  return "item"
