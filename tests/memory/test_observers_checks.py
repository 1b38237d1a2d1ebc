"""Every observer and action check of the library fires on a constructed situation and stays
quiet when the situation is absent. Infos have the shape the envs produce (typed fields)."""

from __future__ import annotations

import pytest

from automem.memory import ACTION_CHECKS, OBSERVERS, ActionCheckSpec, ObserverSpec, StepView
from automem.memory.action_checks import run_check
from automem.memory.observers import run_observer


def v(info=None, action=None, reward=0.0, valid=True, ach=()):
  return StepView(action, reward, "(text is not read)", info or {}, valid, tuple(ach))


def grid(**cells):
  """A Crafter view (7 x 9 of grass) with named cells at (row, col) offsets from the player."""
  rows = [["grass"] * 9 for _ in range(7)]
  for name, (dr, dc) in cells.items():
    rows[3 + dr][4 + dc] = name.rstrip("0123456789")
  return rows


def nle(x=4, y=4, rows=None, **extra):
  rows = rows or [" " * 10] * 3 + ["  |.....  ", "  |.@...  ", "  ------  "] + [" " * 10] * 15
  return {"map": rows, "vitals": {"x": x, "y": y, "hp": 10, "max_hp": 12, "depth": 1},
          **extra}


def obs(name, history, **params):
  return run_observer(ObserverSpec(name, params=params), history)


def test_every_observer_and_check_has_a_documented_schema():
  for d in (*OBSERVERS.values(), *ACTION_CHECKS.values()):
    assert d.doc
    for p in d.params.values():
      assert p.doc and p.kind in ("int", "float", "bool", "str", "list", "table")


def test_inventory_change():
  a, b = {"inventory": {"wood": 1}}, {"inventory": {"wood": 3, "sapling": 1}}
  assert obs("inventory_change", [v(a), v(b, "Do")]) == "Inventory change: +1 sapling, +2 wood."
  assert obs("inventory_change", [v(a), v(a, "Do")]) == ""
  n1, n2 = {"inventory": ["a: sword"]}, {"inventory": ["a: sword", "b: apple"]}
  assert "+1 apple" in obs("inventory_change", [v(n1), v(n2, "pickup")])


def test_action_failures_streak():
  same = {"position": [1, 1], "inventory": {}}
  hist = [v(same)] + [v(same, "Do") for _ in range(3)]
  assert "last 3 actions failed" in obs("action_failures", hist, min_streak=3)
  assert obs("action_failures", hist[:3], min_streak=3) == ""
  moved = [*hist, v({"position": [1, 2], "inventory": {}}, "Move East")]
  assert obs("action_failures", moved, min_streak=1) == ""


def test_threat_crafter_view_and_nle_nearby():
  info = {"view": grid(zombie=(0, 2), arrow=(1, 0), cow=(0, -1))}
  text = obs("threat", [v(info)], radius=3)
  assert "THREAT: zombie 2 step(s) east" in text and "Incoming: arrow 1 step(s) south" in text
  assert obs("threat", [v({"view": grid(cow=(0, 1))})]) == ""
  nearby = {"nearby": [{"name": "jackal", "distance": 2, "direction": "west", "x": 1, "y": 1}]}
  assert "jackal 2 step(s) west" in obs("threat", [v(nearby)], hostile=["jackal"])


def test_progress_stagnation():
  hist = [v({"inventory": {"wood": 1}})] + [v({"inventory": {"wood": 1}}, "Noop")
                                            for _ in range(5)]
  assert "for 5 steps" in obs("progress_stagnation", hist, steps=5)
  hist.append(v({"inventory": {"wood": 1}}, "Do", ach=["collect_wood"]))
  assert obs("progress_stagnation", hist, steps=5) == ""


def test_noop_streak_and_oscillation():
  hist = [v()] + [v(action="wait") for _ in range(3)]
  assert "3 do-nothing actions" in obs("noop_streak", hist, min_streak=3)
  assert obs("noop_streak", [*hist, v(action="north")], min_streak=3) == ""
  moves = [v(nle(x=4 + (k % 2)), "east" if k % 2 else "west") for k in range(9)]
  assert "back and forth between (4,4), (5,4)" in obs("oscillation", moves, window=8)
  straight = [v(nle(x=k), "east") for k in range(9)]
  assert obs("oscillation", straight, window=8) == ""


def test_next_goal_checklist_status_and_inventory_list():
  order = ["collect_wood", "place_table"]
  h = [v({"inventory": {"wood": 2}, "vitals": {"health": 9, "food": 8, "drink": 7, "energy": 9},
          "position": [10, 12]}, ach=["collect_wood"])]
  assert obs("next_goal", h, order=order, needs={"place_table": "2 wood"}) == (
      "Next goal: place_table (needs 2 wood).")
  assert obs("checklist", h, items=order) == "[x] collect_wood\n[ ] place_table"
  status = obs("status_block", h)
  assert "health 9/9" in status and "position x=12, y=10" in status and "wood x2" in status
  assert obs("inventory_list", h) == "wood: 2"


def test_stairs_visits_and_prompt_active():
  rows = [" " * 10] * 3 + ["  |.....  ", "  |.@..>  ", "  ------  "] + [" " * 10] * 15
  assert obs("stairs", [v(nle(rows=rows))]) == "Nearest staircase down: 3 step(s) east."
  assert obs("stairs", [v(nle())]) == "No stairs or exit in view: explore."
  hist = [v(nle(x=3)), v(nle(x=4), "east"), v(nle(x=3), "west"), v(nle(x=4), "east")]
  text = obs("visit_counts", hist)
  assert "Visits here: 2." in text and "Least-visited open direction: east (0 visit(s))" in text
  assert "direction answer" in obs("prompt_active", [v(nle(awaiting="direction"))])
  assert obs("prompt_active", [v(nle(awaiting=""))]) == ""
  assert obs("prompt_active", [v(nle(awaiting="menu"))], kinds=["direction"]) == ""


def test_vitals_two_thresholds():
  h = [v({"vitals": {"health": 1, "food": 3, "drink": 9, "energy": 9}})]
  text = obs("vitals", h, threshold=0.4, critical=0.2)
  assert text.startswith("CRITICAL: health 1/9.") and "WARNING: low food 3/9" in text


def check(kind, action, history, **params):
  return run_check(ActionCheckSpec(kind, params), action, history)


def test_requirements_check():
  mats = {"Place Table": {"wood": 2}, "Make Wood Pickaxe": {"wood": 1}}
  near = {"Make Wood Pickaxe": ["table"]}
  h = [v({"inventory": {"wood": 1}, "view": grid()})]
  assert check("requirements", "place table", h, materials=mats) == "it needs 1 more wood."
  assert "a table within 1 step(s)" in check("requirements", "Make Wood Pickaxe", h,
                                             materials=mats, nearby=near)
  ok = [v({"inventory": {"wood": 1}, "view": grid(table=(1, 1))})]
  assert check("requirements", "Make Wood Pickaxe", ok, materials=mats, nearby=near) == ""
  assert check("requirements", "Move West", h, materials=mats) == ""


def test_sleep_noop_and_wall_checks():
  h = [v({"view": grid(zombie=(2, 2))})]
  assert "zombie is 2 step(s)" in check("sleep_threat", "Sleep", h)
  assert check("sleep_threat", "Sleep", [v({"view": grid()})]) == ""
  idle = [v()] + [v(action="Noop") for _ in range(3)]
  assert "4 do-nothing" in check("noop_streak", "Noop", idle, actions=["Noop"], max_in_row=3)
  assert check("noop_streak", "Noop", idle[:3], actions=["Noop"], max_in_row=3) == ""
  assert "south of you is '-'" in check("wall_move", "south", [v(nle())])
  assert check("wall_move", "north", [v(nle())]) == ""
  door = nle(nearby=[{"name": "open door", "x": 4, "y": 5, "distance": 1, "direction": "south"}])
  assert check("wall_move", "south", [v(door)]) == ""  # an open door looks like a wall


@pytest.mark.parametrize("name", sorted(OBSERVERS))
def test_observers_are_quiet_without_history(name):
  assert run_observer(ObserverSpec(name), []) == ""
