"""BALROG compatibility of the NetHack/MiniHack text envs, on real NLE and MiniHack.

Action names (BALROG's full vocabulary, aliases, arguments carried to prompts,
16-point directions, feedback), observation sections (structure around the
player, the cursor) and MiniHack's success rule. docs/balrog_compatibility.md
is the table these tests hold the code to.
"""

from __future__ import annotations

import os
import pickle
import re
import string

import pytest
from nle.nethack import actions as A

from automem.envs.minihack import BALROG_TASKS, BOXOBAN_ENV_VAR, minihack_slot_factory
from automem.envs.nethack import nethack_slot_factory
from automem.envs.nle_actions import (
    ALIASES,
    BALROG_MINIHACK_NAMES,
    BALROG_NETHACK_NAMES,
    BALROG_PROMPT_NAMES,
    ActionVocab,
    ParsedAction,
)

_DIRS = {"north": "N", "east": "E", "south": "S", "west": "W"}
_DIAG = {"northeast": "NE", "southeast": "SE", "southwest": "SW", "northwest": "NW"}


def _nle_key(name: str) -> int:
  """The keystroke NLE's own action enums give a BALROG name (independent of our tables)."""
  far = name.startswith("far ")
  base = name[4:] if far else name
  if base in _DIRS:
    return int(getattr(A.CompassCardinalDirectionLonger if far else A.CompassCardinalDirection, _DIRS[base]))
  if base in _DIAG:
    cls = A.CompassIntercardinalDirectionLonger if far else A.CompassIntercardinalDirection
    return int(getattr(cls, _DIAG[base]))
  special = {
      "up": A.MiscDirection.UP, "down": A.MiscDirection.DOWN, "wait": A.MiscDirection.WAIT,
      "more": A.MiscAction.MORE, "turnundead": A.Command.TURN, "space": A.TextCharacters.SPACE,
      "minus": A.TextCharacters.MINUS, "apos": A.TextCharacters.APOS,
  }
  return int(special[name] if name in special else getattr(A.Command, name.upper()))


@pytest.fixture(scope="module")
def slot():
  env = nethack_slot_factory(max_steps=10_000, no_progress_steps=None)()
  yield env
  env.close()


# -- actions -------------------------------------------------------------------


def test_every_balrog_name_is_the_same_keystroke():
  vocab = ActionVocab(int(a) for a in A.ACTIONS)
  for name in BALROG_NETHACK_NAMES + BALROG_PROMPT_NAMES + BALROG_MINIHACK_NAMES:
    parsed = vocab.parse(name)
    assert isinstance(parsed, ParsedAction), (name, parsed)
    assert parsed.key == _nle_key(name) and not parsed.arguments, name
  for ch in string.ascii_letters + string.digits:
    assert vocab.parse(ch).key == ord(ch)
  # Aliases are told in the description of the offered name with the same key.
  assert vocab.resolve("more") == "enter" and "also: more" in vocab.descriptions["enter"]
  assert vocab.resolve("turnundead") == "turn" and "also: turnundead" in vocab.descriptions["turn"]
  assert vocab.resolve("Turn_Undead") == "turn" and vocab.resolve("Rush2") == "rush2"


def test_nethack_plays_balrogs_whole_vocabulary(slot):
  slot.reset(6)
  names = (*BALROG_NETHACK_NAMES, *BALROG_PROMPT_NAMES, *ALIASES, *string.ascii_letters, *string.digits)
  for name in names:
    r = slot.step(name)
    assert r.valid_action, (name, r.feedback)
    if r.done:
      slot.reset(6)
    for _ in range(2):  # leave whatever prompt or menu the name opened
      slot.step("esc")
  # BALROG lists "00".."99" too, but its own wrapper raises on them: refused with feedback.
  assert "Invalid action" in slot.vocab.parse("05")


def test_minihack_suite_plays_balrogs_vocabulary():
  if not os.environ.get(BOXOBAN_ENV_VAR):
    pytest.fail(f"${BOXOBAN_ENV_VAR} is not set; tests/conftest.py sets it from ../shared/data")
  for task in BALROG_TASKS:
    env = minihack_slot_factory(task)()
    try:
      keys = {int(k) for k in env._env.actions}
      offered = [n for n in BALROG_MINIHACK_NAMES if _nle_key(n) in keys]  # what BALROG offers here
      assert {"north", "east", "south", "west"} <= set(offered), task
      env.reset(1)
      for name in offered:
        r = env.step(name)
        assert r.valid_action, (task, name, r.feedback)
        if r.done:
          env.reset(1)
    finally:
      env.close()


def test_wield_minus_reaches_the_prompt(slot):
  slot.reset(3)
  r = slot.step("wield -")
  assert r.valid_action and r.feedback == ""
  assert "empty handed" in r.observation.info["message"]
  assert not any("weapon in hand" in line for line in r.observation.info["inventory"])


def test_engrave_text_is_typed_at_the_text_prompt(slot):
  start = slot.reset(3)
  r = slot.step("engrave - Elbereth")
  assert r.valid_action and r.feedback == "", r.feedback
  assert r.observation.info["vitals"]["time"] > start.info["vitals"]["time"]
  assert "Elbereth" in slot.step("look").observation.info["message"]


def test_travel_with_its_answers_in_one_action(slot):
  obs = slot.reset(2)
  start = (obs.info["vitals"]["x"], obs.info["vitals"]["y"])
  for a in ("far east", "far south", "far west", "far north"):
    slot.step(a)
  r = slot.step("travel < .")
  assert r.valid_action and r.feedback == ""
  assert (r.observation.info["vitals"]["x"], r.observation.info["vitals"]["y"]) == start


def test_an_answer_the_game_did_not_ask_for_is_not_sent(slot):
  start = slot.reset(3)
  r = slot.step("search x")  # search asks nothing; "x" alone would swap weapons
  assert r.valid_action
  assert "'x' was not sent after 'search'" in r.feedback and "did not ask" in r.feedback
  assert r.observation.info["vitals"]["time"] == start.info["vitals"]["time"] + 1
  assert r.observation.info["inventory"] == start.info["inventory"]  # no weapon swapped


def test_text_is_not_typed_at_a_key_prompt(slot):
  slot.reset(3)
  r = slot.step("engrave Elbereth")  # engrave first asks what to write with: a key
  assert r.valid_action and "What do you want to write with?" in r.observation.info["message"]
  assert "'Elbereth' was not sent after 'engrave'" in r.feedback and "not a line of text" in r.feedback
  assert "Never mind" in slot.step("esc").observation.info["message"]


@pytest.mark.parametrize("text", ["Eat the apple", "wield sword", "eat 12"])
def test_an_answer_that_is_no_key_is_refused(slot, text):
  obs = slot.reset(3)
  r = slot.step(text)
  assert not r.valid_action and "nothing was done" in r.feedback and "cannot be passed" in r.feedback
  assert r.observation.text == obs.text


def test_action_reader_agrees_with_step_and_plays_nothing(slot):
  """The agent asks `action_reader` before it plays; the pool ships it pickled."""
  reader = pickle.loads(pickle.dumps(slot.action_reader))
  texts = ["more", "wield -", "Wield -", "westnorthwest", "North", "frobnicate", "wield foo", "a"]
  checks = {t: reader.check(t) for t in texts}
  for t in texts:
    slot.reset(3)
    assert (checks[t].action is not None) == slot.step(t).valid_action, t
  assert checks["North"].action == "north"  # a case variant is sent as the name
  assert (checks["wield -"].action, checks["wield -"].name) == ("wield -", "wield")
  assert checks["wield foo"].name == "wield" and "cannot be passed" in checks["wield foo"].feedback
  assert checks["frobnicate"].name is None
  assert reader.hints["enter"] == "also: more"


def test_16_point_directions_move_the_nearest_of_8():
  env = minihack_slot_factory("MazeWalk-9x9")()
  try:
    for word, move in (("westnorthwest", "west"), ("north-northeast", "north"), ("EastSouthEast", "east")):
      env.reset(4)
      r = env.step(word)
      assert r.valid_action
      assert f"taken as '{move}'" in r.feedback and "8 directions" in r.feedback
      env.reset(4)
      assert env.step(move).observation.text == r.observation.text
  finally:
    env.close()


def test_unknown_action_feedback_mentions_letters_only_where_accepted(slot):
  slot.reset(1)
  assert "item letter" in slot.step("xyzzy").feedback
  env = minihack_slot_factory("MazeWalk-9x9")()
  try:
    env.reset(1)
    r = env.step("xyzzy")
    assert not r.valid_action and "Invalid action" in r.feedback and "letter" not in r.feedback
  finally:
    env.close()


# -- observations --------------------------------------------------------------

_MAP_CHARS = {
    "vertical wall": "|", "horizontal wall": "-", "northwest corner": "-", "northeast corner": "-",
    "southwest corner": "-", "southeast corner": "-", "floor": ".", "corridor": "#",
    "dark area": " ", "doorway": ".|-", "iron bars": "#", "a boulder": "`0",
}


def _map_lines(text: str) -> list[str]:
  return text.split("x grows east, y grows south):\n", 1)[1].split("\n\nstatus:")[0].split("\n")


def _check_around(obs) -> set[str]:
  """Each run of the "around you" section matches the ASCII map; the names seen."""
  steps = {"north": (0, -1), "northeast": (1, -1), "east": (1, 0), "southeast": (1, 1),
           "south": (0, 1), "southwest": (-1, 1), "west": (-1, 0), "northwest": (-1, -1)}
  lines, vit, around = _map_lines(obs.text), obs.info["vitals"], obs.info["around"]
  assert list(around) == list(steps)
  names = set()
  for d, runs in around.items():
    assert f"\n{d}: " in obs.text
    for name, first, last in runs:
      names.add(name)
      for k in range(first, last + 1):
        x, y = vit["x"] + k * steps[d][0], vit["y"] + k * steps[d][1]
        if name in _MAP_CHARS:
          ch = lines[y][x] if x < len(lines[y]) else " "
          assert ch in _MAP_CHARS[name], (d, name, k, ch)
  return names


def test_around_you_names_walls_corners_doors_and_dark_areas(slot):
  names = set()
  for seed in (2, 3):
    obs = slot.reset(seed)
    assert "around you (each direction up to 9 steps" in obs.text
    names |= _check_around(obs)
    for a in ("far east", "far north", "far west"):
      names |= _check_around(slot.step(a).observation)
  assert {"horizontal wall", "vertical wall", "floor"} <= names
  assert names & {"northwest corner", "northeast corner", "southwest corner", "southeast corner"}
  assert names & {"dark area", "doorway", "corridor"}


def test_boxoban_bars_are_named():
  if not os.environ.get(BOXOBAN_ENV_VAR):
    pytest.fail(f"${BOXOBAN_ENV_VAR} is not set; tests/conftest.py sets it from ../shared/data")
  env = minihack_slot_factory("Boxoban-Medium")()
  try:
    names = _check_around(env.reset(1))
    assert "iron bars" in names
  finally:
    env.close()


def test_cursor_on_the_player_and_at_travel(slot):
  obs = slot.reset(2)
  cur = obs.info["cursor"]
  assert cur["on_player"] and re.search(r"\ncursor:\non you \(\w+ \w+ called Agent\)", obs.text)
  for a in ("far east", "far south", "far west", "far north"):
    slot.step(a)
  r = slot.step("travel <")  # the cursor now waits on the staircase
  cur = r.observation.info["cursor"]
  assert not cur["on_player"] and cur["name"] == "staircase up"
  assert f"at x={cur['x']}, y={cur['y']}, {cur['distance']} step" in r.observation.text
  assert _map_lines(r.observation.text)[cur["y"]][cur["x"]] == "<"
  slot.step("esc")
  menu = slot.step("inventory").observation  # a menu covers the map: no cursor line
  assert menu.info["menu"] and menu.info["cursor"] is None and "\ncursor:\n" not in menu.text
  slot.step("esc")


# -- MiniHack success ----------------------------------------------------------


def _walk_to_stairs(env, obs, max_steps: int = 30):
  for _ in range(max_steps):
    target = next(e for e in obs.info["nearby"] if e["name"] == "staircase down")
    r = env.step(target["direction"])
    obs = r.observation
    if r.done:
      return r
  raise AssertionError("the stairs were not reached")


def test_minihack_success_balrog_rule_and_goal_rule():
  balrog = minihack_slot_factory("Room-5x5")()  # the default rule
  goal = minihack_slot_factory("Room-5x5", success_rule="goal")()
  try:
    rewards = []
    for seed in range(20, 32):  # a fast role wins some of these at 0.99 (a free move)
      r = _walk_to_stairs(balrog, balrog.reset(seed))
      assert r.stats.end_reason == "goal"
      assert r.stats.progression == (100.0 if r.reward >= 1.0 else 0.0)
      rewards.append(r.reward)
      g = _walk_to_stairs(goal, goal.reset(seed))
      assert g.stats.progression == 100.0 and g.reward == r.reward
      if r.reward < 1.0:
        break
    assert min(rewards) == pytest.approx(0.99), rewards
  finally:
    balrog.close()
    goal.close()
  with pytest.raises(ValueError, match="success_rule"):
    minihack_slot_factory("Room-5x5", success_rule="fast")()
