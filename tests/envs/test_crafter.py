"""The batched Craftax Crafter env: text true to real states, masking, resets, determinism.

Every env here has B=4 slots so the jitted step and reset compile once for the
whole module (they are shared through `automem.envs.crafter._compiled`).
"""

from __future__ import annotations

import re

import jax
import numpy as np
import pytest
from craftax.craftax_classic.constants import BlockType

from automem.envs import crafter_text as ct
from automem.envs import make_env
from automem.envs.crafter import CrafterEnv
from automem.envs.crafter_metrics import ACHIEVEMENTS

B = 4
SEEDS = [11, 22, 33, 44]
# Craftax blocks by their names in the text (independent of the env's own table).
BLOCK_TEXT = {b.value: b.name.lower().replace("_", " ") for b in BlockType}
BLOCK_TEXT.update({BlockType.CRAFTING_TABLE.value: "table", BlockType.OUT_OF_BOUNDS.value: "map edge"})
MOB_TEXT = {"zombies": "zombie", "cows": "cow", "skeletons": "skeleton", "arrows": "arrow"}
OFFSET = {"north": (-1, 0), "south": (1, 0), "west": (0, -1), "east": (0, 1)}
DIRECTION = {1: (0, -1), 2: (0, 1), 3: (-1, 0), 4: (1, 0)}  # Craftax player_direction


@pytest.fixture(scope="module")
def env() -> CrafterEnv:
  return CrafterEnv(B)


def host(state, i: int):
  return jax.tree.map(lambda x: np.asarray(x)[i], state)


def leaves(state) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree.leaves(state)]


def true_name(s, cell: tuple[int, int]) -> str:
  """What is at absolute map cell `cell` of one slot's host state."""
  for group, name in MOB_TEXT.items():
    mobs = getattr(s, group)
    for pos, on in zip(mobs.position, mobs.mask):
      if on and tuple(pos) == cell:
        return name
  r, c = cell
  if not (0 <= r < s.map.shape[0] and 0 <= c < s.map.shape[1]):
    return "map edge"
  return BLOCK_TEXT[int(s.map[r, c])]


def parse_offset(loc: str) -> tuple[int, int]:
  dr = dc = 0
  for n, word in re.findall(r"(\d+) steps? (north|south|west|east)", loc):
    dr += OFFSET[word][0] * int(n)
    dc += OFFSET[word][1] * int(n)
  return dr, dc


def check_text(text: str, s) -> None:
  """Asserts that a text observation is true to one slot's Craftax state."""
  pos = tuple(int(x) for x in s.player_position)
  lines = text.split("\n")
  seen = [ln for ln in lines if ln.startswith("- ") and ":" not in ln]
  view = {}
  for dr in range(-3, 4):
    for dc in range(-4, 5):
      if (dr, dc) != (0, 0):
        view[(dr, dc)] = true_name(s, (pos[0] + dr, pos[1] + dc))
  listed = set()
  for line in seen:
    m = re.fullmatch(r"- ([a-z ]+?) (\d+ steps? .*)", line)
    assert m, line
    name, (dr, dc) = m.group(1), parse_offset(m.group(2))
    assert view[(dr, dc)] == name, (line, view[(dr, dc)])
    # It is the nearest instance.
    nearest = min(abs(a) + abs(b) for (a, b), n in view.items() if n == name)
    assert abs(dr) + abs(dc) == nearest, line
    listed.add(name)
  # Every visible cell type is listed, the ground (grass, sand, path) too, as BALROG does.
  visible = {n for n in view.values() if n not in ct.DEFAULT_SKIP}
  assert listed == visible, (listed, visible)
  fr, fc = DIRECTION[int(s.player_direction)]
  faced = true_name(s, (pos[0] + fr, pos[1] + fc))
  assert re.search(rf"You face {faced} at your front \((north|south|west|east)\)\.", text), text
  for vital in ("health", "food", "drink", "energy"):
    assert f"- {vital}: {int(getattr(s, 'player_' + vital))}/9" in text
  for item in ct.INVENTORY_ITEMS:
    count = int(getattr(s.inventory, item))
    assert (f"- {item}: {count}" in text) == (count > 0), item
  assert text.startswith("You are sleeping") == bool(s.is_sleeping)
  phase = "day" if float(s.light_level) >= 0.5 else "night"
  m = re.search(r"It is (day|night) \(daylight (\d+)%\)\.", text)
  assert m and m.group(1) == phase, (m and m.group(0), float(s.light_level))
  assert abs(int(m.group(2)) - 100 * float(s.light_level)) <= 1


def test_make_env_and_action_names():
  e = make_env("crafter", B, max_steps=10)
  assert isinstance(e, CrafterEnv) and e.num_envs == B and e.max_steps == 10
  assert e.action_names[:5] == ("Noop", "Move West", "Move East", "Move North", "Move South")
  with pytest.raises(ValueError, match="step"):
    e.step(["Noop"] * B)  # never reset
  with pytest.raises(ValueError, match="location_style"):
    CrafterEnv(B, location_style="diagonal")


def test_text_true_to_state_over_random_play(env):
  obs = env.reset(SEEDS)
  for i in range(B):
    check_text(obs[i].text, host(env.state, i))
  rng = np.random.default_rng(0)
  moves = ["Move West", "Move East", "Move North", "Move South", "Do", "Noop"]
  for _ in range(25):
    results = env.step([moves[k] for k in rng.integers(0, len(moves), B)])
    for i, r in enumerate(results):
      s = host(env.state, i)
      check_text(r.observation.text, s)
      assert r.observation.info["position"] == [int(x) for x in s.player_position]
      assert r.stats.length == int(s.timestep)


def test_scripted_wood_table_pickaxe():
  """Walk to trees by the text alone, collect 3 wood, place a table, make a pickaxe."""
  env = CrafterEnv(B)
  for base in range(0, 40, B):
    obs = env.reset(list(range(base, base + B)))
    for slot in range(B):
      ok, achievements, rewards = run_script(env, slot, obs[slot].text)
      if ok:
        assert achievements == ("collect_wood", "place_table", "make_wood_pickaxe")
        s = host(env.state, slot)
        # +1 per achievement, +-0.1 per health point gained or lost (from 9).
        assert rewards == pytest.approx(3.0 + 0.1 * (int(s.player_health) - 9), abs=1e-5)
        assert env.stats(slot).progression == pytest.approx(300 / 22)
        assert env.stats(slot).episode_return == pytest.approx(rewards, abs=1e-5)
        assert np.asarray(s.achievements).sum() == 3
        assert int(s.inventory.wood_pickaxe) == 1 and int(s.inventory.wood) == 0
        return
  pytest.fail("no seed in 0..39 let the scripted agent finish")


def run_script(env, slot: int, text: str) -> tuple[bool, tuple[str, ...], float]:
  wood, total = 0, 0.0
  for _ in range(60):
    if wood >= 3:
      break
    m = re.search(r"^- tree (.*)$", text, re.M)
    if not m:
      return False, (), 0.0
    dr, dc = parse_offset(m.group(1))
    if abs(dr) + abs(dc) == 1:
      word = {(-1, 0): "North", (1, 0): "South", (0, -1): "West", (0, 1): "East"}[(dr, dc)]
      text, r = act(env, slot, f"Move {word}")  # a tree blocks: this only turns
      total += r
      text, r = act(env, slot, "Do")
      total += r
      wood = int(re.search(r"- wood: (\d+)", text).group(1)) if "- wood:" in text else 0
    else:
      if dr:
        word = "North" if dr < 0 else "South"
      else:
        word = "West" if dc < 0 else "East"
      text, r = act(env, slot, f"Move {word}")
      total += r
  if wood < 3:
    return False, (), 0.0
  # The mined tree became grass in front of us: place the table there.
  text, r = act(env, slot, "Place Table")
  total += r
  text, r = act(env, slot, "make wood pickaxe")
  total += r
  stats = env.stats(slot)
  return "- wood_pickaxe: 1" in text, stats.achievements, total


def act(env, slot: int, action: str) -> tuple[str, float]:
  actions = [None] * B
  actions[slot] = action
  r = env.step(actions)[slot]
  assert r.valid_action, (action, r.feedback)
  return r.observation.text, r.reward


def test_invalid_and_variant_actions(env):
  env.reset([5, 5, 6, 6])
  results = env.step(["dance", "Noop", "  move_left ", "MOVE WEST"])
  bad, noop, v1, v2 = results
  assert not bad.valid_action and "Invalid action" in bad.feedback and "Move West" in bad.feedback
  assert noop.valid_action and noop.feedback == ""
  assert bad.observation.text == noop.observation.text  # an invalid action is a Noop
  for a, b in zip(leaves(host(env.state, 0)), leaves(host(env.state, 1))):
    np.testing.assert_array_equal(a, b)
  assert v1.valid_action and v2.valid_action and v1.observation.text == v2.observation.text
  assert bad.stats.length == 1


def test_partial_step_leaves_other_slots_untouched(env):
  env.reset(SEEDS)
  env.step(["Move North"] * B)
  before = [leaves(host(env.state, i)) for i in range(B)]
  results = env.step([None, "Do", None, "Move South"])
  assert results[0] is None and results[2] is None
  assert results[1] is not None and results[3] is not None
  for i in (0, 2):
    for a, b in zip(before[i], leaves(host(env.state, i))):
      np.testing.assert_array_equal(a, b)
  assert int(env.state.timestep[1]) == 2 and int(env.state.timestep[0]) == 1
  assert env.step([None] * B) == [None] * B


def test_partial_reset_and_determinism_across_batches(env):
  env.reset(SEEDS)
  env.step(["Move East"] * B)
  before = [leaves(host(env.state, i)) for i in range(B)]
  obs = env.reset([123], indices=[2])
  assert len(obs) == 1
  for i in (0, 1, 3):
    for a, b in zip(before[i], leaves(host(env.state, i))):
      np.testing.assert_array_equal(a, b)
  assert int(env.state.timestep[2]) == 0

  # Seed 123 in slot 2 of this batch and in slot 0 of another batch: same episode.
  other = CrafterEnv(B)
  other_obs = other.reset([123, 7, 8, 9])
  assert other_obs[0].text == obs[0].text
  rng = np.random.default_rng(1)
  for k in rng.integers(0, 17, 30):
    name = ct.ACTION_NAMES[k]
    a = env.step(["Noop", None, name, "Do"])[2]
    b = other.step([name, "Sleep", "Noop", None])[0]
    assert a.observation.text == b.observation.text
    assert a.reward == b.reward and a.done == b.done
  for x, y in zip(leaves(host(env.state, 2)), leaves(host(other.state, 0))):
    np.testing.assert_array_equal(x, y)
  # A different seed gives a different world.
  third = CrafterEnv(B)
  third.reset([124, 7, 8, 9])
  assert not np.array_equal(np.asarray(third.state.map[0]), np.asarray(other.state.map[0]))


def test_episode_cap_and_done_slots_stay_done():
  env = CrafterEnv(B, max_steps=3)
  env.reset(SEEDS)
  for _ in range(3):
    results = env.step(["Noop"] * B)
  assert all(r.done and r.stats.end_reason == "step_cap" and r.stats.length == 3 for r in results)
  frozen = leaves(env.state)
  again = env.step(["Do"] * B)
  assert all(r.done and "reset" in r.feedback and r.reward == 0.0 for r in again)
  for a, b in zip(frozen, leaves(env.state)):
    np.testing.assert_array_equal(a, b)
  obs = env.reset([99], [1])
  assert "You see" in obs[0].text and env.step([None, "Noop", None, None])[1].done is False


def test_death_ends_the_episode(env):
  env.reset(SEEDS)
  state = env.state
  env._state = state.replace(player_health=state.player_health.at[0].set(0))
  results = env.step(["Noop"] * B)
  assert results[0].done and results[0].stats.end_reason == "death"
  assert results[0].observation.text.startswith("You died.")
  assert not any(r.done for r in results[1:])


def test_achievement_names_cover_craftax():
  assert len(ACHIEVEMENTS) == 22
  env = CrafterEnv(B)
  env.reset(SEEDS)
  s = env.state
  env._state = s.replace(achievements=s.achievements.at[0, 0].set(True))  # Craftax COLLECT_WOOD
  r = env.step(["Noop", None, None, None])[0]
  assert r.stats.achievements == ("collect_wood",)


def test_no_recompilation(env):
  """Runs last in this module: every step and reset above reused one compilation each."""
  env.reset(SEEDS)
  for _ in range(3):
    env.step(["Do", None, "Noop", "Move West"])
  env.reset([1, 2], [0, 3])
  assert env._fns.step._cache_size() == 1
  assert env._fns.reset._cache_size() == 1
