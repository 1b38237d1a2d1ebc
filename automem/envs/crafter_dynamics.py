"""One Craftax-Classic step, with a cheaper mob-spawn sampler for batched CPU use.

`craftax_step` spends ~90% of its time on CPU in `spawn_mobs`, which builds
three 64x64 candidate maps per env per step and samples from each with
`jax.random.choice` (a cumulative sum over 4096 cells). Mobs only spawn
closer than `mob_despawn_distance` (14) to the player, so `spawn_mobs_local`
applies the same rules on the 27x27 window around the player and samples a
candidate cell uniformly in two small stages (row, then column). The spawn
distribution is the same as Craftax's (uniform over the valid cells, same
chances, same order cow -> zombie -> skeleton); only the spawn draws differ.
Everything else is Craftax's own code, called in Craftax's order with
Craftax's key splits, so without spawns `craftax_step_local` and
`craftax_step` agree bit for bit (tested).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from craftax.craftax_classic import game_logic as gl
from craftax.craftax_classic.constants import Action, BlockType
from craftax.craftax_classic.envs.craftax_state import EnvParams, EnvState, StaticEnvParams


def _window(state: EnvState, radius: int) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """The (2r+1)^2 window around the player, clamped inside the map.

  Returns:
    blocks: int [S, S] map ids; mobs: bool [S, S] occupied cells;
    dist: int [S, S] steps from the player; origin: int [2] window corner.
  """
  size = 2 * radius + 1
  limit = jnp.array(state.map.shape) - size
  origin = jnp.clip(state.player_position - radius, 0, limit).astype(jnp.int32)
  blocks = jax.lax.dynamic_slice(state.map, origin, (size, size))
  mobs = jax.lax.dynamic_slice(state.mob_map, origin, (size, size))
  rows = origin[0] + jnp.arange(size)
  cols = origin[1] + jnp.arange(size)
  dist = (
      jnp.abs(rows - state.player_position[0])[:, None]
      + jnp.abs(cols - state.player_position[1])[None, :]
  )
  return blocks, mobs, dist, origin


def _sample_cell(key: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """A uniformly random True cell of `mask` [S, S] (row, col), and whether any exists."""
  row_counts = mask.sum(axis=1, dtype=jnp.int32)
  total = row_counts.sum()
  k = jnp.minimum(
      (jax.random.uniform(key) * total).astype(jnp.int32), jnp.maximum(total - 1, 0)
  )
  row_end = jnp.cumsum(row_counts)
  row = jnp.sum(row_end <= k).astype(jnp.int32)
  row = jnp.minimum(row, mask.shape[0] - 1)
  k_in_row = k - (row_end[row] - row_counts[row])
  col_end = jnp.cumsum(mask[row].astype(jnp.int32))
  col = jnp.minimum(jnp.sum(col_end <= k_in_row), mask.shape[1] - 1).astype(jnp.int32)
  return jnp.stack([row, col]), total > 0


def _spawn(state: EnvState, group: str, key: jax.Array, chance: jax.Array,
           allowed: tuple[jax.Array, jax.Array], health: int, max_count: int) -> EnvState:
  """Spawns one mob of `group` at a random allowed window cell with probability `chance`.

  `allowed` is (bool [S, S] candidate cells, int [2] window origin).
  """
  mobs = getattr(state, group)
  ok, origin = allowed
  k_chance, k_cell = jax.random.split(key)
  cell, any_cell = _sample_cell(k_cell, ok)
  spawn = (mobs.mask.sum() < max_count) & (jax.random.uniform(k_chance) < chance) & any_cell
  slot = jnp.argmax(jnp.logical_not(mobs.mask))
  position = jnp.where(spawn, origin + cell, mobs.position[slot]).astype(mobs.position.dtype)
  mobs = mobs.replace(
      position=mobs.position.at[slot].set(position),
      health=mobs.health.at[slot].set(jnp.where(spawn, health, mobs.health[slot])),
      mask=mobs.mask.at[slot].set(mobs.mask[slot] | spawn),
  )
  mob_map = state.mob_map.at[position[0], position[1]].set(
      state.mob_map[position[0], position[1]] | spawn
  )
  return state.replace(**{group: mobs}, mob_map=mob_map)


def spawn_mobs_local(
    state: EnvState, rng: jax.Array, params: EnvParams, static_params: StaticEnvParams
) -> EnvState:
  """Craftax-Classic's mob spawning rules, sampled on the window around the player."""
  radius = params.mob_despawn_distance - 1
  keys = jax.random.split(rng, 3)
  grass = BlockType.GRASS.value
  path = BlockType.PATH.value

  def candidates(state, block_ok, min_dist):
    blocks, mobs, dist, origin = _window(state, radius)
    ok = block_ok(blocks) & (dist > min_dist) & (dist < params.mob_despawn_distance) & ~mobs
    return ok, origin

  state = _spawn(
      state, "cows", keys[0], params.spawn_cow_chance,
      candidates(state, lambda b: b == grass, 3), params.cow_health, static_params.max_cows,
  )
  zombie_chance = (
      params.spawn_zombie_base_chance
      + params.spawn_zombie_night_chance * jnp.square(1 - state.light_level)
  )
  state = _spawn(
      state, "zombies", keys[1], zombie_chance,
      candidates(state, lambda b: (b == grass) | (b == path), 9), params.zombie_health,
      static_params.max_zombies,
  )
  state = _spawn(
      state, "skeletons", keys[2], params.spawn_skeleton_chance,
      candidates(state, lambda b: b == path, 9), params.skeleton_health,
      static_params.max_skeletons,
  )
  return state


def craftax_step_local(
    rng: jax.Array, state: EnvState, action: jax.Array, params: EnvParams,
    static_params: StaticEnvParams,
) -> tuple[EnvState, jax.Array]:
  """Craftax-Classic's step (same sub-steps, same order) with `spawn_mobs_local`."""
  init_achievements = state.achievements
  init_health = state.player_health
  action = jax.lax.select(state.is_sleeping, Action.NOOP.value, action)
  state = gl.do_crafting(state, action)
  # The same chain of key splits as `craftax_step`: without spawns the two agree bit for bit.
  rng, key = jax.random.split(rng)
  state = gl.do_action(key, state, action, static_params)
  state = gl.place_block(state, action, static_params)
  state = gl.move_player(state, action)
  rng, key = jax.random.split(rng)
  state = gl.update_mobs(key, state, params, static_params)
  rng, key = jax.random.split(rng)
  state = spawn_mobs_local(state, key, params, static_params)
  state = gl.update_plants(state, static_params)
  state = gl.update_player_intrinsics(state, action)
  state = gl.cap_inventory(state)
  state = gl.update_health(state)
  reward = (
      state.achievements.astype(jnp.float32).sum()
      - init_achievements.astype(jnp.float32).sum()
      + (state.player_health - init_health) * 0.1
  )
  rng, key = jax.random.split(rng)
  state = state.replace(
      timestep=state.timestep + 1,
      light_level=gl.calculate_light_level(state.timestep + 1, params),
      state_rng=key,
  )
  return state, reward
