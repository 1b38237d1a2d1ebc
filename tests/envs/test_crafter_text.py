"""Pure tests of the Crafter text renderer, action names and metrics (no JAX)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from automem.envs import crafter_metrics as cm
from automem.envs import crafter_text as ct

GRASS = ct.CELL_IDS["grass"]


def make_view(cells, facing=(-1, 0), vitals=(9, 9, 9, 9), inventory=None, sleeping=False,
              dead=False, daylight=0.8) -> ct.CrafterView:
  inv = np.zeros(len(ct.INVENTORY_ITEMS), int)
  for name, count in (inventory or {}).items():
    inv[ct.INVENTORY_ITEMS.index(name)] = count
  return ct.CrafterView(
      cells=np.asarray(cells)[None], facing=np.array([facing]), vitals=np.array([vitals]),
      inventory=inv[None], sleeping=np.array([sleeping]), dead=np.array([dead]),
      daylight=np.array([daylight]),
  )


def grass() -> np.ndarray:
  return np.full((ct.VIEW_HEIGHT, ct.VIEW_WIDTH), GRASS)


def test_describe_location_offset_and_classic():
  assert ct.describe_location(1, -4) == "1 step south and 4 steps west"
  assert ct.describe_location(-2, 0) == "2 steps north"
  assert ct.describe_location(0, 1) == "1 step east"
  assert ct.describe_location(0, 0) == "at your location"
  assert ct.describe_location(1, -4, "classic") == "5 steps to your south-west"
  assert ct.describe_location(-3, 0, "classic") == "3 steps to your north"
  with pytest.raises(ValueError, match="style"):
    ct.describe_location(1, 1, "diagonal")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Move West", 1), ("move west", 1), ("MOVE_WEST", 1), ("  Move-West. ", 1),
        ("move_left", 1), ('"Do"', 5), ("noop", 0), ("Make Iron Sword", 16),
        ("make   iron\tsword", 16), ("place_table", 8), ("MoveWest", 1),
        ("makewoodpickaxe", 11), ("PlaceTable", 8),
    ],
)
def test_parse_action_variants(text, expected):
  assert ct.parse_action(text) == expected


@pytest.mark.parametrize("text", ["fly", "", "Move Northwest", "Make Diamond Sword", None, 3])
def test_parse_action_rejects(text):
  assert ct.parse_action(text) is None
  feedback = ct.invalid_action_feedback(text)
  assert "Invalid action" in feedback and "Noop" in feedback and "Make Iron Sword" in feedback


def test_action_names_round_trip():
  assert len(ct.ACTION_NAMES) == 17
  assert [ct.parse_action(n) for n in ct.ACTION_NAMES] == list(range(17))


def test_nearest_instance_in_steps_and_order():
  cells = grass()
  # Player at (3, 4). Trees at offsets (-3, 0) [3 steps] and (1, -1) [2 steps].
  cells[0, 4] = ct.CELL_IDS["tree"]
  cells[4, 3] = ct.CELL_IDS["tree"]
  cells[3, 8] = ct.CELL_IDS["water"]  # 4 steps east
  cells[2, 4] = ct.CELL_IDS["cow"]  # 1 step north, faced
  text = ct.render_text(make_view(cells), skip=ct.COMPACT_SKIP)[0]
  lines = text.split("\n")
  seen = lines[1 : lines.index("")]
  assert seen == [
      "- cow 1 step north",
      "- tree 1 step south and 1 step west",
      "- water 4 steps east",
  ]
  assert "You face cow at your front (north)." in text
  assert ct.nearest_objects(cells, ct.COMPACT_SKIP) == {"cow": (-1, 0), "tree": (1, -1), "water": (0, 4)}
  # By default the ground is listed too, at its nearest cell (BALROG's empty skip list).
  full = ct.render_text(make_view(cells))[0].split("\n")
  assert full[1 : full.index("")] == [
      "- cow 1 step north", "- grass 1 step west", "- tree 1 step south and 1 step west",
      "- water 4 steps east",
  ]
  assert ct.nearest_objects(cells)["grass"] == (0, -1)
  # The classic (BALROG) wording gives the total distance.
  classic = ct.render_text(make_view(cells), style="classic")[0]
  assert "- tree 2 steps to your south-west" in classic


def test_faced_cell_uses_row_and_column():
  cells = grass()
  cells[3, 5] = ct.CELL_IDS["stone"]  # east of the player
  cells[4, 4] = ct.CELL_IDS["water"]  # south of the player
  assert "You face stone at your front (east)." in ct.render_text(make_view(cells, facing=(0, 1)))[0]
  assert "You face water at your front (south)." in ct.render_text(make_view(cells, facing=(1, 0)))[0]
  assert "You face grass at your front (west)." in ct.render_text(make_view(cells, facing=(0, -1)))[0]


def test_status_vitals_inventory_daylight():
  view = make_view(grass(), vitals=(3, 4, 5, 0), inventory={"wood": 2, "wood_pickaxe": 1},
                   sleeping=True, daylight=0.25)
  text = ct.render_text(view, skip=ct.COMPACT_SKIP)[0]
  assert text.startswith("You are sleeping")
  assert "You see nothing away from you." in text
  assert "You see:\n- grass 1 step north\n" in ct.render_text(view)[0]
  assert "- health: 3/9\n- food: 4/9\n- drink: 5/9\n- energy: 0/9" in text
  assert "Your inventory:\n- wood: 2\n- wood_pickaxe: 1" in text
  assert "It is night (daylight 25%)." in text
  dead = ct.render_text(make_view(grass(), dead=True, sleeping=True))[0]
  assert dead.startswith("You died.") and "sleeping" not in dead
  empty = ct.render_text(make_view(grass()))[0]
  assert "You have nothing in your inventory." in empty and "It is day" in empty
  # Night is daylight < 0.5 (when crafter darkens the screen), whatever the rounding says.
  assert "It is night (daylight 50%)." in ct.render_text(make_view(grass(), daylight=0.498))[0]
  assert "It is day (daylight 50%)." in ct.render_text(make_view(grass(), daylight=0.5))[0]


def test_skip_items_are_checked():
  assert ct.check_skip(["grass"]) == ("grass",)
  with pytest.raises(ValueError, match="gras"):
    ct.check_skip(("gras",))


def test_batched_render_matches_per_slot():
  rng = np.random.default_rng(0)
  b = 16
  view = ct.CrafterView(
      cells=rng.integers(0, len(ct.CELL_NAMES), (b, ct.VIEW_HEIGHT, ct.VIEW_WIDTH)),
      facing=np.array([list(ct.FACING.values())[i % 4] for i in range(b)]),
      vitals=rng.integers(0, 10, (b, 4)),
      inventory=rng.integers(0, 3, (b, len(ct.INVENTORY_ITEMS))),
      sleeping=rng.random(b) < 0.3, dead=rng.random(b) < 0.2, daylight=rng.random(b),
  )
  batched = ct.render_text(view)
  assert batched == [ct.render_text(view.slot(i))[0] for i in range(b)]
  assert len(set(batched)) == b


def test_view_shape_is_checked():
  with pytest.raises(ValueError, match="cells"):
    ct.CrafterView(
        cells=np.zeros((1, 9, 7), int), facing=np.zeros((1, 2)), vitals=np.zeros((1, 4)),
        inventory=np.zeros((1, 12)), sleeping=np.zeros(1, bool), dead=np.zeros(1, bool),
        daylight=np.zeros(1),
    )


def test_progression_and_crafter_score():
  assert cm.progression(["collect_wood", "place_table"]) == pytest.approx(200 / 22)
  assert cm.progression(cm.ACHIEVEMENTS) == 100.0
  with pytest.raises(ValueError, match="unknown"):
    cm.progression(["collect_gold"])
  assert cm.crafter_score([0.0] * 22) == pytest.approx(0.0)
  assert cm.crafter_score([100.0] * 22) == pytest.approx(100.0)
  rates = np.linspace(0, 100, 22)
  assert cm.crafter_score(list(rates)) == pytest.approx(math.exp(np.mean(np.log1p(rates))) - 1)
  episodes = [{"collect_wood", "place_table"}, {"collect_wood"}]
  sr = cm.success_rates(episodes)
  assert sr["collect_wood"] == 100.0 and sr["place_table"] == 50.0 and sr["wake_up"] == 0.0
  assert cm.crafter_score(sr) == pytest.approx(math.exp((math.log(101) + math.log(51)) / 22) - 1)
  with pytest.raises(ValueError, match="22"):
    cm.crafter_score([1.0] * 3)
  with pytest.raises(ValueError, match="missing"):
    cm.crafter_score({"collect_wood": 1.0})


def test_a_single_string_is_not_a_batch():
  from automem.envs.base import check_batch

  with pytest.raises(TypeError, match="one string"):
    check_batch("east", 4)
  with pytest.raises(ValueError, match="expected 4 actions"):
    check_batch(["east"], 4)
