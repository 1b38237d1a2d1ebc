"""NetHack text env on real NLE: seeds, invalid and multi-key actions, --More--, caps, pool."""

from __future__ import annotations

import random
import re

import pytest

from automem.envs.nethack import NetHackEnv, nethack_slot_factory


@pytest.fixture(scope="module")
def slot():
  env = nethack_slot_factory(max_steps=10_000, no_progress_steps=None)()
  yield env
  env.close()


def _play(env, seed, actions):
  texts = [env.reset(seed).text]
  for a in actions:
    r = env.step(a)
    texts.append((r.observation.text, r.reward, r.done, r.stats.length, r.stats.episode_return))
    if r.done:
      break
  return texts


def test_seed_fully_determines_the_episode(slot):
  actions = [random.Random(1).choice(slot.action_names[:19]) for _ in range(60)]
  a = _play(slot, 11, actions)
  b = _play(slot, 11, actions)
  c = _play(slot, 12, actions)
  assert a == b
  assert a[0] != c[0]


def test_observation_sections(slot):
  obs = slot.reset(5)
  for head in ("message:", "nearby:", "map (you are the @ at", "status:", "inventory:"):
    assert head in obs.text
  vit = obs.info["vitals"]
  assert vit["depth"] == 1 and vit["hp"] > 0 and vit["hp"] <= vit["max_hp"]
  # The player's @ is where blstats says, in the map section's coordinates.
  map_lines = obs.text.split("x grows east, y grows south):\n", 1)[1].split("\n\nstatus:")[0].split("\n")
  assert map_lines[vit["y"]][vit["x"]] == "@"
  assert "Dlvl:1" in obs.text and "HP:" in obs.text
  assert re.search(r"^[a-zA-Z$]: ", obs.text.split("inventory:\n", 1)[1], re.M)
  for e in obs.info["nearby"]:
    assert e["distance"] == max(abs(e["x"] - vit["x"]), abs(e["y"] - vit["y"])) > 0


def test_invalid_action_is_a_noop_with_feedback(slot):
  obs = slot.reset(3)
  for bad in ("xyzzy", "00", "42", "", "far", "Eat the apple"):
    r = slot.step(bad)
    assert not r.valid_action and not r.done and r.reward == 0.0
    assert "Invalid action" in r.feedback and "nothing was done" in r.feedback
    assert r.observation.text == obs.text  # the game did not move
  assert r.stats.length == 6  # invalid actions still cost a step
  r = slot.step("wait")
  assert r.valid_action and r.feedback == "" and r.observation.info["vitals"]["time"] > obs.info["vitals"]["time"]


def _edible_seed(env):
  for seed in range(40):
    env.reset(seed)
    r = env.step("eat")
    m = re.search(r"What do you want to eat\? \[([a-zA-Z]+)", r.observation.info["message"])
    if m:
      return seed, m.group(1)[0]
  raise AssertionError("no starting inventory with food in 40 seeds")


def test_eat_then_item_letter(slot):
  seed, letter = _edible_seed(slot)
  start = slot.reset(seed)
  line = next(x for x in start.info["inventory"] if x.startswith(letter + ":"))
  r = slot.step("eat")
  assert r.valid_action and "What do you want to eat?" in r.observation.info["message"]
  assert r.observation.info["vitals"]["time"] == start.info["vitals"]["time"]
  r = slot.step(letter)
  assert r.valid_action, r.feedback
  assert "What do you want to eat?" not in r.observation.info["message"]
  # Eating took game time and used up (part of) the item.
  assert r.observation.info["vitals"]["time"] > start.info["vitals"]["time"]
  assert line not in r.observation.info["inventory"]


def test_prompt_can_be_cancelled_with_esc(slot):
  slot.reset(3)
  assert "What do you want to" in slot.step("quaff").observation.info["message"]
  r = slot.step("esc")
  assert r.valid_action and "Never mind" in r.observation.info["message"]


def test_more_prompts_are_stepped_through(slot):
  rng = random.Random(0)
  names = (*slot.action_names[:19], "look", "pickup", "search", "esc")
  skipped = 0
  for seed in range(3):
    slot.reset(seed)
    for _ in range(150):
      r = slot.step(rng.choice(names))
      assert "--More--" not in r.observation.info["message"]
      assert "--More--" not in r.observation.text.split("\n")[1]
      skipped += r.observation.info["more_prompts"]
      if r.done:
        break
  assert skipped > 0  # random play meets --More-- prompts; they never reach the agent


def test_caps_step_cap_and_no_progress():
  capped = nethack_slot_factory(max_steps=4, no_progress_steps=None)()
  capped.reset(1)
  results = [capped.step("search") for _ in range(4)]
  assert [r.done for r in results] == [False, False, False, True]
  assert results[-1].stats.end_reason == "step_cap" and results[-1].stats.length == 4
  after = capped.step("search")
  assert after.done and not after.valid_action and after.stats.length == 4
  capped.close()
  stuck = nethack_slot_factory(no_progress_steps=3)()
  stuck.reset(1)
  results = [stuck.step(a) for a in ("inventory", "esc", "nonsense")]
  assert results[-1].done and results[-1].stats.end_reason == "no_progress"
  assert results[-1].stats.achievements[:2] == ("Dlvl:1", "Xp:1")
  stuck.close()


def test_every_offered_name_is_accepted(slot):
  slot.reset(2)
  for name in slot.action_names:
    r = slot.step(name)
    assert r.valid_action, name
    if r.done:
      slot.reset(2)
    slot.step("esc")


def test_pool_matches_in_process():
  actions = [random.Random(2).choice(("north", "east", "south", "west", "search", "far east")) for _ in range(25)]
  outs, names = [], []
  for workers in (0, 1):
    env = NetHackEnv(2, num_workers=workers)
    try:
      texts = [o.text for o in env.reset([7, 8])]
      for i, a in enumerate(actions):
        results = env.step([a, None] if i % 2 else [a, a])
        assert results[1] is None or results[1].observation.text
        texts += [r.observation.text for r in results if r is not None]
      outs.append(texts)
      names.append(env.action_names)
    finally:
      env.close()
  assert outs[0] == outs[1]
  assert names[0] == names[1]


def test_digits_reach_the_count_prompt(slot):
  start = slot.reset(4)
  for key in ("2", "0"):
    r = slot.step(key)
    assert r.valid_action
  assert "Count: 20" in r.observation.info["message"]
  r = slot.step("search")
  assert r.observation.info["vitals"]["time"] > start.info["vitals"]["time"]


def test_travel_picks_a_staircase_with_map_symbols(slot):
  obs = slot.reset(2)
  start = (obs.info["vitals"]["x"], obs.info["vitals"]["y"])
  assert slot.action_descriptions["travel"].startswith("travel")
  for a in ("far east", "far south", "far west", "far north"):
    r = slot.step(a)
  assert (r.observation.info["vitals"]["x"], r.observation.info["vitals"]["y"]) != start
  assert "Where do you want to travel to?" in slot.step("travel").observation.info["message"]
  assert slot.step("<").observation.info["message"] == "staircase up"  # the cursor is on it
  r = slot.step(".")
  assert (r.observation.info["vitals"]["x"], r.observation.info["vitals"]["y"]) == start  # back on "<"


def test_menus_are_shown_and_answered_with_letters(slot):
  obs = slot.reset(3)
  assert obs.info["menu"] is None
  r = slot.step("inventory")
  menu = r.observation.info["menu"]
  assert menu is not None and menu.endswith("(end)")
  assert all(line.split(": ", 1)[0] + " - " in menu for line in obs.info["inventory"])
  assert "covered by the menu" in r.observation.text
  assert slot.step("esc").observation.info["menu"] is None
  # A multi-select menu: pick a class by letter, confirm with enter, get the next menu.
  r = slot.step("droptype")
  assert "Drop what type of items?" in r.observation.info["menu"]
  letter = next(ln[0] for ln in r.observation.info["menu"].splitlines() if ln.endswith(" - Comestibles"))
  assert "+ Comestibles" in slot.step(letter).observation.info["menu"]
  assert "What would you like to drop?" in slot.step("enter").observation.info["menu"]
  slot.step("esc")
