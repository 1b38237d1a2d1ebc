"""The original crafter package behind the Crafter text renderer, in the worker pool."""

from __future__ import annotations

import crafter
import numpy as np

from automem.envs import crafter_text as ct
from automem.envs.crafter_original import CrafterOriginalEnv, crafter_original_slot_factory

PLAN = ["Do", "Move West", "Move North", "Do", "Noop", "Move East", "Do", "Sleep", "Move South", "Do"] * 3


def test_seed_s_is_the_world_of_crafter_env_seed_s():
  ours = crafter_original_slot_factory()()
  ours.reset(7)
  ref = crafter.Env(seed=7)  # how BALROG builds it
  ref.reset()
  assert np.array_equal(ours._env._world._mat_map, ref._world._mat_map)
  for name in PLAN:
    r = ours.step(name)
    _, reward, _, info = ref.step(ct.parse_action(name))
    assert r.reward == reward
    assert np.array_equal(ours._env._player.pos, info["player_pos"])
    assert r.observation.info["inventory"] == {k: v for k, v in info["inventory"].items() if v and k in ct.INVENTORY_ITEMS}


def test_text_actions_and_stats():
  env = crafter_original_slot_factory(max_steps=5, area=(24, 24))()  # small world: fast worldgen
  obs = env.reset(3)
  assert "You see" in obs.text and "Your status" in obs.text
  assert env.action_names == ct.ACTION_NAMES
  r = env.step("fly away")
  assert not r.valid_action and "Invalid action" in r.feedback and r.stats.length == 1
  r = env.step("move_left")  # crafter's own names are accepted too
  assert r.valid_action
  for _ in range(3):
    r = env.step("Noop")
  assert r.done and r.stats.end_reason == "step_cap" and r.stats.game == "crafter"
  assert r.stats.task == "crafter_original"


def test_pool_matches_in_process():
  outs = []
  for workers in (0, 1):
    env = CrafterOriginalEnv(1, num_workers=workers, area=(24, 24))
    try:
      texts = [o.text for o in env.reset([5])]
      for name in PLAN:
        texts += [(r.observation.text, r.reward, r.stats) for r in env.step([name])]
      outs.append(texts)
    finally:
      env.close()
  assert outs[0] == outs[1]
