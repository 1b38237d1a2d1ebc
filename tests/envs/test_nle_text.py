"""Pure parts of the NLE text layer: progression table, directions, --More--, action names."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from automem.envs import nle_progress
from automem.envs.nle_actions import NAMED_ACTIONS, ActionVocab
from automem.envs.nle_text import direction, menu_text, more_text, tty_lines


def _blstats(depth: int, xp: int) -> np.ndarray:
  bl = np.zeros(27, dtype=np.int64)
  bl[nle_progress.BL_DEPTH] = depth
  bl[nle_progress.BL_XP] = xp
  return bl


def test_progression_table_is_balrogs_and_shipped_with_source():
  table = nle_progress.progression_table()
  here = os.path.dirname(nle_progress.__file__)
  with open(os.path.join(here, "..", "data", "nethack_progression.json")) as f:
    assert table == json.load(f)
  # The reference copy beside the checkout (../shared/data), which CI has too.
  shared = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data",
                        "nethack_progression.json")
  if os.path.exists(shared):  # absent outside this workspace and its CI
    with open(shared) as f:
      assert table == json.load(f)
  with open(os.path.join(here, "..", "data", "SOURCES.md")) as f:
    note = f.read()
  assert "balrog-ai/BALROG" in note and "af7d1f1" in note and "MIT" in note


def test_progression_on_synthetic_blstats_is_max_over_depth_and_xp():
  table = nle_progress.progression_table()
  tracker = nle_progress.ProgressTracker()
  tracker.update(_blstats(1, 1))
  assert tracker.progression == pytest.approx(100 * max(table["Dlvl:1"], table["Xp:1"]))
  tracker.update(_blstats(4, 2))
  tracker.update(_blstats(3, 6))  # went back up: the deepest level still counts
  expected = 100 * max(table[k] for k in ("Dlvl:1", "Xp:1", "Dlvl:4", "Xp:2", "Dlvl:3", "Xp:6"))
  assert tracker.progression == pytest.approx(expected)
  assert tracker.reached == ["Dlvl:1", "Xp:1", "Dlvl:4", "Xp:2", "Dlvl:3", "Xp:6"]
  # Deeper is worth more than shallower in the table, so Dlvl:4 beats Dlvl:3.
  assert table["Dlvl:4"] > table["Dlvl:3"]
  assert 0.0 <= tracker.progression <= 100.0


def test_progression_ignores_milestones_outside_the_table():
  assert nle_progress.progression(["Dlvl:99", "Xp:99"]) == 0.0
  assert nle_progress.progression([]) == 0.0
  assert nle_progress.progression(["Dlvl:10"]) == pytest.approx(100 * nle_progress.progression_table()["Dlvl:10"])


@pytest.mark.parametrize(
    ("dx", "dy", "name"),
    [(0, -3, "north"), (2, 0, "east"), (0, 1, "south"), (-5, 0, "west"), (1, -1, "northeast"),
     (3, 3, "southeast"), (-2, 2, "southwest"), (-1, -1, "northwest"), (7, 2, "east"), (0, 0, "here")],
)
def test_direction(dx, dy, name):
  assert direction(dx, dy) == name


def _tty(rows: dict[int, tuple[int, str]]) -> np.ndarray:
  tty = np.full((24, 80), ord(" "), dtype=np.uint8)
  for r, (col, text) in rows.items():
    tty[r, col : col + len(text)] = np.frombuffer(text.encode(), dtype=np.uint8)
  return tty


def test_more_text_top_line_and_window():
  assert more_text(_tty({0: (0, "You see here a dagger.--More--")})) == "You see here a dagger."
  window = _tty({0: (30, "Things that are here:"), 1: (30, "a dagger"), 2: (30, "an apple"), 3: (30, "--More--")})
  assert more_text(window) == "Things that are here:\na dagger\nan apple"
  assert more_text(_tty({0: (0, "Hello.")})) is None


def test_action_vocab_offers_only_sendable_keys_and_matches_them():
  full = ActionVocab(list(range(256)))
  assert full.resolve("far north") == "far north"
  assert full.resolve("  Far_North ") == "far north"
  assert full.resolve("e") == "e" and full.resolve("E") == "E"  # letters are case sensitive
  assert full.resolve("-") == "-" and full.resolve("7") == "7"
  assert full.resolve("42") is None and full.resolve("") is None and full.resolve("frobnicate") is None
  assert full.key("eat") == ord("e") and full.key("kick") == 4 and full.key("pray") == 0x80 | ord("p")
  assert len(set(full.names)) == len(full.names)
  # Every offered name resolves to itself: the offered and accepted lists are one.
  assert all(full.resolve(n) == n for n in full.names)
  moves = ActionVocab([ord(c) for c in "kljhunby"])
  assert moves.names == ("north", "east", "south", "west", "northeast", "southeast", "southwest", "northwest")
  assert moves.resolve("k") is None and moves.resolve("eat") is None
  assert "quit" not in NAMED_ACTIONS and "save" not in NAMED_ACTIONS


def test_menu_text_finds_menus_by_their_end_marker():
  menu = _tty({0: (40, "Pick an object"), 2: (40, "a - a dagger"), 3: (40, "b - an apple"), 4: (40, "(end)")})
  assert menu_text(tty_lines(menu)) == "Pick an object\n\na - a dagger\nb - an apple\n(end)"
  paged = _tty({1: (10, "Things"), 2: (10, "x - stuff"), 3: (10, "(1 of 2)")})
  assert menu_text(tty_lines(paged)) == "Things\nx - stuff\n(1 of 2)"
  assert menu_text(tty_lines(_tty({0: (0, "You see the end (end) of it.")}))) is None
  assert menu_text(tty_lines(_tty({5: (3, "a wall (end)")}))) is None  # not a marker on its own
