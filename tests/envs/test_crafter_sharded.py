"""CrafterEnv sharded over 8 simulated CPU devices plays exactly like the unsharded env.

tests/conftest.py gives JAX 8 host devices. The same seeds and actions go to a
sharded env and to a one-device env; every observation, reward, done flag,
metric and the Craftax state itself must be identical, and the sharded step
must compile once.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from automem.envs import crafter_text as ct
from automem.envs.crafter import CrafterEnv, batch_mesh

STEPS = 6


def play(env: CrafterEnv, seeds: list[int], rng_seed: int) -> list:
  """Resets, steps random actions (some slots idle), resets the first two slots mid-way."""
  rng = np.random.default_rng(rng_seed)
  names = np.array([*ct.ACTION_NAMES, "fly away"], dtype=object)  # one invalid action too
  n = env.num_envs
  out = [[(o.text, o.info) for o in env.reset(seeds)]]
  for t in range(STEPS):
    actions = [None if rng.random() < 0.2 else str(a) for a in rng.choice(names, n)]
    results = env.step(actions)
    out.append([None if r is None else
                (r.observation.text, r.observation.info, r.reward, r.done, r.valid_action,
                 r.feedback, r.stats.to_dict()) for r in results])
    if t == STEPS // 2:
      out.append([(o.text, o.info) for o in env.reset([seeds[0] + 100, 7], [0, 1])])
  return out


def state_rows(env: CrafterEnv) -> list[np.ndarray]:
  return [np.asarray(x)[: env.num_envs] for x in jax.tree.leaves(env.state)]


def test_sharded_env_matches_the_unsharded_env():
  # 10 slots on 8 devices: two rows per device; rows 10-15 (three devices) are padding.
  num_envs = 10
  seeds = [101 + 7 * i for i in range(num_envs)]
  sharded = CrafterEnv(num_envs, max_steps=5)
  plain = CrafterEnv(num_envs, devices=1, max_steps=5)
  assert sharded.num_devices == 8 and plain.num_devices == 1
  got, want = play(sharded, seeds, 0), play(plain, seeds, 0)
  assert got == want
  assert any(r is not None and r[3] for r in got[-1])  # the step cap ended some episodes
  for a, b in zip(state_rows(sharded), state_rows(plain), strict=True):
    np.testing.assert_array_equal(a, b)
  # The state really lives on every device of the mesh, one block of rows each.
  leaf = jax.tree.leaves(sharded.state)[0]
  assert len({s.device for s in leaf.addressable_shards}) == sharded.num_devices
  assert leaf.shape[0] == 16 and len(leaf.addressable_shards[0].data) == 2
  # One compilation of the step (and of the reset) for the whole run.
  assert sharded._fns.step._cache_size() == 1
  assert sharded._fns.reset._cache_size() == 1


def test_bad_device_counts_are_refused():
  with pytest.raises(ValueError, match=r"devices must be in \[1, 8\]"):
    CrafterEnv(4, devices=9)
  with pytest.raises(ValueError, match="devices must be in"):
    batch_mesh(0)
  assert batch_mesh(None, 3).size == 3  # never more devices than slots
