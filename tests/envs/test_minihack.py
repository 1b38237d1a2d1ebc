"""MiniHack text env on real MiniHack: BALROG's tasks, Boxoban levels, goal and caps."""

from __future__ import annotations

import os

import pytest

from automem.envs.minihack import (
  BALROG_TASKS,
  BOXOBAN_ENV_VAR,
  MiniHackEnv,
  minihack_slot_factory,
  resolve_task,
)


def test_short_task_names():
  assert resolve_task("Corridor-R3") == "MiniHack-Corridor-R3-v0"
  assert resolve_task("MiniHack-Quest-Easy-v0") == "MiniHack-Quest-Easy-v0"
  assert resolve_task("MazeWalk-9x9-v0") == "MiniHack-MazeWalk-9x9-v0"


@pytest.mark.parametrize("task", BALROG_TASKS)
def test_balrog_tasks_reset_reproducibly(task):
  if "Boxoban" in task and not os.environ.get(BOXOBAN_ENV_VAR):
    pytest.fail(f"${BOXOBAN_ENV_VAR} is not set; tests/conftest.py sets it from ../shared/data")
  env = MiniHackEnv(2, task, num_workers=0)
  try:
    first = env.reset([3, 4])
    again = env.reset([3, 4])
    assert first[0].text != first[1].text
    assert [o.text for o in first] == [o.text for o in again]
    assert first[0].info["task"] == task
    names = env.action_names
    assert {"north", "east", "south", "west"} <= set(names)
    results = env.step([names[1], "not an action"])
    assert results[0].valid_action and not results[1].valid_action
    assert results[1].observation.text == first[1].text
    assert all(r.stats.task == task and r.stats.game == "minihack" for r in results)
  finally:
    env.close()


def test_missing_boxoban_levels_is_a_clear_error(tmp_path, monkeypatch):
  monkeypatch.setenv(BOXOBAN_ENV_VAR, str(tmp_path))
  with pytest.raises(FileNotFoundError, match=BOXOBAN_ENV_VAR) as err:
    minihack_slot_factory("Boxoban-Hard")
  assert "download_boxoban_levels" in str(err.value)
  monkeypatch.delenv(BOXOBAN_ENV_VAR)
  with pytest.raises(FileNotFoundError, match="neither boxoban_dir"):
    MiniHackEnv(1, "Boxoban-Medium", num_workers=0)
  # Other tasks do not need them.
  minihack_slot_factory("Corridor-R3")


def _walk_towards(env, obs, name: str, max_steps: int):
  """Steps towards the nearest entity called `name` until the episode ends; the last result."""
  for _ in range(max_steps):
    targets = [e for e in obs.info["nearby"] if e["name"] == name]
    assert targets, obs.text
    r = env.step(targets[0]["direction"])
    obs = r.observation
    if r.done:
      break
  return r


def test_reaching_the_goal_gives_progression_100():
  env = minihack_slot_factory("Room-5x5")()
  for seed in range(3):
    r = _walk_towards(env, env.reset(seed), "staircase down", 30)
    assert r.done and r.stats.end_reason == "goal" and r.stats.progression == 100.0
    assert r.reward > 0
  env.close()


def test_step_cap_defaults_to_balrogs_100():
  env = minihack_slot_factory("Corridor-R3")()
  env.reset(0)
  for i in range(100):
    r = env.step("search")
    assert r.done == (i == 99)
  assert r.stats.end_reason == "step_cap" and r.stats.length == 100 and r.stats.progression == 0.0
  # BALROG's penalty (-0.01 for a step in which game time stands still) applies.
  assert -1.0 <= r.stats.episode_return < 0.0
  env.close()


def test_walking_into_lava_ends_in_death():
  env = minihack_slot_factory("Quest-Easy")()
  r = _walk_towards(env, env.reset(0), "molten lava", 20)
  assert r.done and r.stats.end_reason == "death" and r.stats.progression == 0.0
  assert r.observation.info["how_done"] == "burning"
  env.close()
