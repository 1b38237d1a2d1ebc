"""Text observations and action names for Crafter, shared by every Crafter backend.

Pure functions over plain numpy data: a backend (Craftax in `crafter.py`, the
original `crafter` package in a worker pool) converts its state into a batched
`CrafterView` and `render_text` turns the whole batch into BALROG-style
descriptions with vectorised numpy, so no backend-specific code lives here.

Conventions (those of the original crafter and BALROG): the local view is 9
cells wide and 7 tall, the player in its centre; north is up (toward row 0),
west is left (toward column 0); "Move North" decreases the row.

Departures from BALROG's wrapper, on purpose:
- the nearest instance of an object is nearest in steps (Manhattan distance, as
  BALROG's sum of the numbers in its wording); a tie goes north first, then west,
  where BALROG keeps the first cell of its west-to-east scan;
- the faced cell is read with (row, column) the right way round and is named
  as it is (grass, sand, ...) since placing needs a free faced cell;
- the default wording is the exact offset ("1 step south and 4 steps west");
  BALROG's diagonal wording ("5 steps to your south-west") is `style="classic"`,
  since it tempts models into diagonal moves that do not exist;
- objects are listed nearest first, plants say whether they are ripe, and the
  daylight is stated.
As in BALROG, the nearest grass, sand and path are listed (`DEFAULT_SKIP`);
`COMPACT_SKIP` leaves them out. docs/balrog_compatibility.md lists every difference.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import numpy as np

from automem.envs.base import normalize_action_name

VIEW_HEIGHT = 7  # rows, north to south
VIEW_WIDTH = 9  # columns, west to east
CENTER = (VIEW_HEIGHT // 2, VIEW_WIDTH // 2)  # the player's cell, (row, column)

# Normalised cell vocabulary of a `CrafterView`: terrain, then creatures.
CELL_NAMES: tuple[str, ...] = (
    "unknown",
    "map edge",
    "grass",
    "water",
    "stone",
    "tree",
    "wood",
    "path",
    "coal",
    "iron",
    "diamond",
    "table",
    "furnace",
    "sand",
    "lava",
    "plant",
    "ripe plant",
    "zombie",
    "cow",
    "skeleton",
    "arrow",
    "player",
)
CELL_IDS: dict[str, int] = {name: i for i, name in enumerate(CELL_NAMES)}

# Cells left out of "You see" by default: only what is never an object. BALROG's default
# skip list is empty, so it reports the nearest grass, sand and path too, and so do we.
DEFAULT_SKIP: tuple[str, ...] = ("unknown", "player")
# The shorter listing (BALROG's commented-out alternative): ground cells left out too.
COMPACT_SKIP: tuple[str, ...] = ("unknown", "grass", "sand", "path", "player")

VITALS: tuple[str, ...] = ("health", "food", "drink", "energy")
VITAL_MAX = 9
# Inventory items in the original crafter's order (after the vitals).
INVENTORY_ITEMS: tuple[str, ...] = (
    "sapling",
    "wood",
    "stone",
    "coal",
    "iron",
    "diamond",
    "wood_pickaxe",
    "stone_pickaxe",
    "iron_pickaxe",
    "wood_sword",
    "stone_sword",
    "iron_sword",
)

# The 17 actions, in the action-id order shared by crafter and Craftax-Classic.
ACTION_NAMES: tuple[str, ...] = (
    "Noop",
    "Move West",
    "Move East",
    "Move North",
    "Move South",
    "Do",
    "Sleep",
    "Place Stone",
    "Place Table",
    "Place Furnace",
    "Place Plant",
    "Make Wood Pickaxe",
    "Make Stone Pickaxe",
    "Make Iron Pickaxe",
    "Make Wood Sword",
    "Make Stone Sword",
    "Make Iron Sword",
)
NOOP = 0
# The original crafter's internal names, accepted as aliases.
_CRAFTER_NAMES = (
    "noop", "move_left", "move_right", "move_up", "move_down", "do", "sleep", "place_stone",
    "place_table", "place_furnace", "place_plant", "make_wood_pickaxe", "make_stone_pickaxe",
    "make_iron_pickaxe", "make_wood_sword", "make_stone_sword", "make_iron_sword",
)
_ACTION_LOOKUP: dict[str, int] = {
    **{normalize_action_name(n): i for i, n in enumerate(_CRAFTER_NAMES)},
    **{normalize_action_name(n): i for i, n in enumerate(ACTION_NAMES)},
}
# "MoveWest", "makewoodpickaxe": the names without spaces (none of them collide).
_ACTION_LOOKUP.update({k.replace(" ", ""): i for k, i in list(_ACTION_LOOKUP.items())})
_STRIP = " \t\r\n\"'`.!*"

# Facing offsets (d_row, d_col) by name.
FACING: dict[str, tuple[int, int]] = {
    "north": (-1, 0), "south": (1, 0), "west": (0, -1), "east": (0, 1),
}

STYLES = ("offset", "classic")


def check_skip(skip: tuple[str, ...] | list[str]) -> tuple[str, ...]:
  """`skip` as a tuple of cell names; a ValueError names any that is not one."""
  bad = [n for n in skip if n not in CELL_IDS]
  if bad:
    raise ValueError(f"unknown cell names {bad} in skip_items; expected names from {CELL_NAMES}")
  return tuple(skip)


def parse_action(text: str | None) -> int | None:
  """The action id of `text`, or None when it names no action.

  Case, spacing, `_`/`-` separators, surrounding quotes and a trailing period
  are ignored; the original crafter names (`move_left`, ...) are accepted too.
  """
  if not isinstance(text, str):
    return None
  key = normalize_action_name(text.strip(_STRIP))
  return _ACTION_LOOKUP.get(key, _ACTION_LOOKUP.get(key.replace(" ", "")))


def invalid_action_feedback(text: object) -> str:
  """The feedback line for an action text that names no action."""
  shown = repr(text) if not isinstance(text, str) else f'"{text[:80]}"'
  return (
      f"Invalid action {shown}; a Noop was taken instead. "
      f"Valid actions: {', '.join(ACTION_NAMES)}."
  )


@dataclasses.dataclass(frozen=True)
class CrafterView:
  """What the player perceives in each slot of a batch, as plain numpy arrays.

  Attributes:
    cells: int [B, 7, 9] ids into `CELL_NAMES`; row 0 is the north edge of the
      view, column 0 the west edge, the player at `CENTER`. A creature is shown
      instead of the terrain under it.
    facing: int [B, 2] the (d_row, d_col) unit offset the player faces.
    vitals: int [B, 4] health, food, drink, energy (0..9).
    inventory: int [B, 12] counts in `INVENTORY_ITEMS` order.
    sleeping: bool [B].
    dead: bool [B].
    daylight: float [B] in [0, 1]; below 0.5 it is night.
  """

  cells: np.ndarray
  facing: np.ndarray
  vitals: np.ndarray
  inventory: np.ndarray
  sleeping: np.ndarray
  dead: np.ndarray
  daylight: np.ndarray

  def __post_init__(self) -> None:
    b = self.cells.shape[0]
    expected = {
        "cells": (b, VIEW_HEIGHT, VIEW_WIDTH), "facing": (b, 2), "vitals": (b, len(VITALS)),
        "inventory": (b, len(INVENTORY_ITEMS)), "sleeping": (b,), "dead": (b,), "daylight": (b,),
    }
    for name, shape in expected.items():
      got = np.shape(getattr(self, name))
      if got != shape:
        raise ValueError(f"CrafterView.{name} has shape {got}, expected {shape}")

  @property
  def batch_size(self) -> int:
    return self.cells.shape[0]

  def slot(self, i: int) -> CrafterView:
    """The one-slot view of slot `i`."""
    return CrafterView(**{f.name: getattr(self, f.name)[i : i + 1] for f in dataclasses.fields(self)})


def _steps(n: int) -> str:
  return f"{n} step{'s' if n != 1 else ''}"


def describe_location(d_row: int, d_col: int, style: str = "offset") -> str:
  """Where a cell at offset (d_row, d_col) from the player is, in words.

  "offset": "1 step south and 4 steps west"; "classic" (BALROG's old form):
  "5 steps to your south-west".
  """
  ns = "north" if d_row < 0 else "south" if d_row > 0 else ""
  ew = "west" if d_col < 0 else "east" if d_col > 0 else ""
  if not ns and not ew:
    return "at your location"
  if style == "offset":
    parts = [f"{_steps(abs(d))} {w}" for d, w in ((d_row, ns), (d_col, ew)) if w]
    return " and ".join(parts)
  if style == "classic":
    return f"{_steps(abs(d_row) + abs(d_col))} to your {'-'.join(w for w in (ns, ew) if w)}"
  raise ValueError(f"unknown location style {style!r}; expected one of {STYLES}")


class _Tables(NamedTuple):
  order: np.ndarray  # int [N] flat cells, nearest first, the player's cell excluded
  listed: np.ndarray  # int [C] the cell ids "You see" may list
  column: np.ndarray  # int [len(CELL_NAMES)] cell id -> index in `listed`, C if unlisted
  lines: np.ndarray  # object [C, N + 1]: line of listed[c] at order[k]; "" at k = N


@functools.cache
def _tables(style: str, skip: tuple[str, ...]) -> _Tables:
  """Precomputed cell order and "You see" lines (ranked by steps, then north, then west)."""
  if style not in STYLES:
    raise ValueError(f"unknown location style {style!r}; expected one of {STYLES}")
  rows, cols = np.divmod(np.arange(VIEW_HEIGHT * VIEW_WIDTH), VIEW_WIDTH)
  d_row, d_col = rows - CENTER[0], cols - CENTER[1]
  key = np.lexsort((d_col, d_row, np.abs(d_row) + np.abs(d_col)))  # last key is primary
  order = key[1:]  # key[0] is the player's own cell (distance 0)
  listed = np.array([i for i, n in enumerate(CELL_NAMES) if n not in skip], dtype=np.int64)
  column = np.full(len(CELL_NAMES), len(listed), dtype=np.int64)
  column[listed] = np.arange(len(listed))
  locs = [describe_location(int(d_row[k]), int(d_col[k]), style) for k in order]
  lines = np.array([[f"- {CELL_NAMES[c]} {loc}" for loc in locs] + [""] for c in listed], dtype=object)
  return _Tables(order, listed, column, lines)


def _first_hits(cells: np.ndarray, t: _Tables) -> np.ndarray:
  """int [B, C]: rank of the nearest cell of each listed type, N if absent."""
  b, n, c = cells.shape[0], len(t.order), len(t.listed)
  ids = cells.reshape(b, -1)[:, t.order]
  ids = np.where((ids >= 0) & (ids < len(CELL_NAMES)), ids, 0)
  best = np.full((b, c + 1), n, dtype=np.int64)  # column c collects unlisted cells
  rows = np.repeat(np.arange(b), n)
  np.minimum.at(best, (rows, t.column[ids].ravel()), np.tile(np.arange(n), b))
  return best[:, :c]


_STATUS_LINES = (
    "",
    "You are sleeping, and will not be able to take actions until energy is full.\n\n",
    "You died.\n\n",
)
_FACED = np.array(
    [[f"\n\nYou face {name} at your front ({d})." for d in FACING] for name in CELL_NAMES],
    dtype=object,
)
_DAYLIGHT = np.array(  # [is_day, percent]; night is daylight < 0.5, as crafter darkens it
    [[f"\nIt is {phase} (daylight {p}%)." for p in range(101)] for phase in ("night", "day")],
    dtype=object,
)
_INVENTORY_CAP = 100
_INVENTORY_LINES = np.array(
    [[""] + [f"\n- {item}: {c}" for c in range(1, _INVENTORY_CAP)] for item in INVENTORY_ITEMS],
    dtype=object,
)


def nearest_objects(
    cells: np.ndarray, skip: tuple[str, ...] = DEFAULT_SKIP
) -> dict[str, tuple[int, int]] | list[dict[str, tuple[int, int]]]:
  """The (d_row, d_col) offset of the nearest instance of each visible object.

  Args:
    cells: int [7, 9] or [B, 7, 9] cell ids.
    skip: cell names never listed.

  Returns:
    For each view, {object name: offset from the player}, nearest first.
  """
  cells = np.asarray(cells)
  single = cells.ndim == 2
  cells = cells[None] if single else cells
  t = _tables("offset", tuple(skip))
  first = _first_hits(cells, t)
  rows, cols = np.divmod(t.order, VIEW_WIDTH)
  out = []
  for ranks in first:
    found = sorted((int(r), CELL_NAMES[c]) for c, r in zip(t.listed, ranks) if r < len(t.order))
    out.append({name: (int(rows[r]) - CENTER[0], int(cols[r]) - CENTER[1]) for r, name in found})
  return out[0] if single else out


def render_text(
    view: CrafterView, style: str = "offset", skip: tuple[str, ...] = DEFAULT_SKIP
) -> list[str]:
  """One BALROG-style text observation per slot of `view`.

  Args:
    view: the batch to describe.
    style: "offset" ("1 step south and 4 steps west") or "classic"
      ("5 steps to your south-west").
    skip: cell names left out of the "You see" list.

  Returns:
    B strings: status, the nearest visible objects (nearest first), the faced
    cell, daylight, vitals and inventory.
  """
  t = _tables(style, tuple(skip))
  cells = np.asarray(view.cells)
  b, n = cells.shape[0], len(t.order)
  first = _first_hits(cells, t)  # [B, C]
  perm = np.argsort(first, axis=1, kind="stable")  # nearest types first
  ranks = np.take_along_axis(first, perm, axis=1)
  seen = t.lines[perm, ranks].tolist()  # "" for absent types, which sort last
  n_seen = (ranks < n).sum(axis=1).tolist()
  facing = np.asarray(view.facing).astype(np.int64)
  faced = cells[np.arange(b), CENTER[0] + facing[:, 0], CENTER[1] + facing[:, 1]]
  faced = np.where((faced >= 0) & (faced < len(CELL_NAMES)), faced, 0)
  direction = np.select(
      [facing[:, 0] < 0, facing[:, 0] > 0, facing[:, 1] < 0], [0, 1, 2], 3
  )  # index into FACING: north, south, west, east
  faced_l = _FACED[faced, direction].tolist()
  light = np.asarray(view.daylight, np.float64)
  percent = np.minimum(np.maximum(np.rint(100 * light).astype(np.int64), 0), 100)
  daylight_l = _DAYLIGHT[(light >= 0.5).astype(np.int64), percent].tolist()
  status_l = np.where(
      np.asarray(view.dead, bool), 2, np.asarray(view.sleeping, bool).astype(np.int64)
  ).tolist()
  vitals = np.asarray(view.vitals).tolist()
  counts = np.minimum(np.maximum(np.asarray(view.inventory, np.int64), 0), _INVENTORY_CAP - 1)
  inventory_l = _INVENTORY_LINES[np.arange(len(INVENTORY_ITEMS)), counts].tolist()
  texts = []
  for i in range(b):
    k = n_seen[i]
    h, f, d, e = vitals[i]
    items = "".join(inventory_l[i])
    texts.append(
        _STATUS_LINES[status_l[i]]
        + ("You see:\n" + "\n".join(seen[i][:k]) if k else "You see nothing away from you.")
        + faced_l[i]
        + daylight_l[i]
        + f"\n\nYour status:\n- health: {h}/{VITAL_MAX}\n- food: {f}/{VITAL_MAX}"
        + f"\n- drink: {d}/{VITAL_MAX}\n- energy: {e}/{VITAL_MAX}"
        + ("\n\nYour inventory:" + items if items else "\n\nYou have nothing in your inventory.")
    )
  return texts
