"""The windowed mob-spawn sampler follows Craftax-Classic's spawn rules and distribution."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from craftax.craftax_classic import game_logic as gl
from craftax.craftax_classic.constants import BlockType
from craftax.craftax_classic.envs.craftax_state import EnvParams, StaticEnvParams
from craftax.craftax_classic.world_gen import generate_world

from automem.envs.crafter_dynamics import craftax_step_local, spawn_mobs_local

N = 4000  # spawn draws per sampler
STATIC = StaticEnvParams()
ALWAYS = EnvParams(spawn_cow_chance=1.0, spawn_zombie_base_chance=1.0, spawn_skeleton_chance=1.0)
RULES = {  # group: (allowed blocks, minimum distance exclusive) -- Craftax-Classic's rules
    "cows": ((BlockType.GRASS.value,), 3),
    "zombies": ((BlockType.GRASS.value, BlockType.PATH.value), 9),
}


def empty_state(seed: int, position=None):
  """A real generated world with no mobs (so every mob slot is free)."""
  state = generate_world(jax.random.PRNGKey(seed), EnvParams(), STATIC)
  none = lambda m: m.replace(mask=jnp.zeros_like(m.mask))  # noqa: E731
  state = state.replace(
      cows=none(state.cows), zombies=none(state.zombies), skeletons=none(state.skeletons),
      mob_map=jnp.zeros_like(state.mob_map),
  )
  if position is not None:
    state = state.replace(player_position=jnp.asarray(position, jnp.int32))
  return state


def candidates(state, group: str) -> set[tuple[int, int]]:
  blocks, min_dist = RULES[group]
  m = np.asarray(state.map)
  pos = np.asarray(state.player_position)
  r, c = np.indices(m.shape)
  dist = np.abs(r - pos[0]) + np.abs(c - pos[1])
  ok = np.isin(m, blocks) & (dist > min_dist) & (dist < 14) & ~np.asarray(state.mob_map)
  return set(zip(*map(lambda a: a.tolist(), np.nonzero(ok))))


@functools.partial(jax.jit, static_argnums=(0, 2))
def _draw(fn, state, params):
  keys = jax.random.split(jax.random.PRNGKey(1), N)
  return jax.vmap(lambda k: fn(state, k, params, STATIC))(keys)


def draw(fn, state, params):
  return jax.device_get(_draw(fn, state, params))


@pytest.mark.parametrize("position", [None, (2, 61)], ids=["centre", "corner"])
def test_spawn_cells_valid_and_uniform(position):
  state = empty_state(3, position)
  local = draw(spawn_mobs_local, state, ALWAYS)
  reference = draw(gl.spawn_mobs, state, ALWAYS)
  # A cow spawns first, on the map as it was; its cell then excludes the zombie.
  for name, out in (("local", local), ("craftax", reference)):
    cows = {tuple(p) for p in out.cows.position[out.cows.mask[:, 0], 0].tolist()}
    assert cows <= candidates(state, "cows"), name
  allowed = candidates(state, "cows")
  assert len(allowed) > 20
  spawned = local.cows.mask[:, 0]
  assert spawned.all()
  cells, counts = np.unique(local.cows.position[:, 0], axis=0, return_counts=True)
  assert {tuple(c) for c in cells.tolist()} == allowed  # every allowed cell is reachable
  expected = N / len(allowed)
  chi2 = ((counts - expected) ** 2 / expected).sum() + expected * (len(allowed) - len(counts))
  k = len(allowed) - 1
  assert chi2 < k + 6 * np.sqrt(2 * k), chi2  # uniform over the allowed cells
  # Zombies: allowed cells (minus the cow's), present in both samplers.
  z_allowed = candidates(state, "zombies")
  for out in (local, reference):
    z = out.zombies.position[out.zombies.mask[:, 0], 0].tolist()
    assert z and {tuple(p) for p in z} <= z_allowed
    both = out.zombies.mask[:, 0] & out.cows.mask[:, 0]
    same = (out.zombies.position[:, 0] == out.cows.position[:, 0]).all(axis=1)
    assert both.any() and not (both & same).any()


def test_spawn_chances_match_craftax():
  state = empty_state(4).replace(light_level=jnp.float32(0.2))
  params = EnvParams()
  local = draw(spawn_mobs_local, state, params)
  reference = draw(gl.spawn_mobs, state, params)
  zombie = params.spawn_zombie_base_chance + params.spawn_zombie_night_chance * 0.8**2
  for group, p in (("cows", params.spawn_cow_chance), ("zombies", zombie)):
    rates = [getattr(out, group).mask[:, 0].mean() for out in (local, reference)]
    tol = 5 * np.sqrt(p * (1 - p) / N)
    assert abs(rates[0] - p) < tol and abs(rates[1] - p) < tol, (group, rates, p)


@pytest.mark.slow
def test_step_equals_craftax_step_without_spawns():
  """Apart from spawning, `craftax_step_local` is Craftax's step: same states, same rewards."""
  quiet = EnvParams(
      spawn_cow_chance=0.0, spawn_zombie_base_chance=0.0, spawn_zombie_night_chance=0.0,
      spawn_skeleton_chance=0.0,
  )
  ours = jax.jit(lambda k, s, a: craftax_step_local(k, s, a, quiet, STATIC))
  theirs = jax.jit(lambda k, s, a: gl.craftax_step(k, s, a, quiet, STATIC))
  a = generate_world(jax.random.PRNGKey(5), quiet, STATIC)
  for k in range(2):  # worlds start empty: add mobs so that their moves are compared too
    a = jax.jit(spawn_mobs_local, static_argnums=(2, 3))(a, jax.random.PRNGKey(k), ALWAYS, STATIC)
  assert int(np.asarray(a.cows.mask).sum()) == 2 and int(np.asarray(a.zombies.mask).sum()) == 2
  b = a
  rng = np.random.default_rng(0)
  for t, action in enumerate(rng.integers(0, 17, 40)):
    key = jax.random.PRNGKey(t)
    a, ra = ours(key, a, action)
    b, rb = theirs(key, b, action)
    assert float(ra) == float(rb)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
