"""Crafter on Craftax-Classic: B text-game slots advanced by one jitted, vmapped step.

The whole batch lives on the device as one Craftax `EnvState` with a leading
slot axis. `step` runs the Craftax-Classic step on every slot under `jax.vmap`
(by default with the faster mob-spawn sampler of `crafter_dynamics`) and keeps
the old state where a slot had no action (`None`) or its episode is over;
`reset` generates worlds only for the requested slots (in chunks of a fixed
size, so one shape compiles) and scatters them in. Craftax's
auto-reset wrapper is not used: it builds a fresh world on every step.

Determinism: a slot's seed gives a base key; the world comes from
`fold_in(key, 0)` and step t's dynamics from `fold_in(fold_in(key, 1), t)`, so
an episode depends only on its seed and its actions, never on the batch.

State dtypes are made canonical (strong, as the step returns them) once, so
the second call reuses the first compilation.

Devices: the slot axis is sharded over a `jax.sharding` mesh ("batch") of
the local devices (all of them by default, at most one per slot; the batch
is padded to a multiple of the mesh with slots that never play), so the
step stays one jitted call and every device steps its share. In a
multi-process JAX job (a TPU pod, several GPU hosts after
`jax.distributed.initialize()`) the mesh spans every process's devices: each
process owns `num_envs` slots of the global batch, passes its own actions,
fetches only its own rows and renders text only for them. `step` and
`reset` are then collective calls: every process makes them together, as in
any multi-process JAX program.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from craftax.craftax_classic.constants import Achievement, BlockType
from craftax.craftax_classic.envs.craftax_state import EnvParams, EnvState, StaticEnvParams
from craftax.craftax_classic.game_logic import craftax_step
from craftax.craftax_classic.world_gen import generate_world
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from automem.envs import crafter_text as ct
from automem.envs.base import EpisodeStats, Observation, StepResult, TextEnv, check_batch
from automem.envs.crafter_dynamics import craftax_step_local
from automem.envs.crafter_metrics import ACHIEVEMENTS

_H, _W = ct.VIEW_HEIGHT, ct.VIEW_WIDTH
_N_CELLS = _H * _W

# Craftax block id -> `crafter_text` cell id.
_BLOCK_NAMES = {
    "INVALID": "unknown", "OUT_OF_BOUNDS": "map edge", "CRAFTING_TABLE": "table",
    "RIPE_PLANT": "ripe plant",
}
_BLOCK_TO_CELL = np.array(
    [ct.CELL_IDS[_BLOCK_NAMES.get(b.name, b.name.lower())] for b in BlockType], dtype=np.int32
)
# Mob groups of the Craftax state, lowest drawing priority first.
_MOBS = (("arrows", "arrow"), ("cows", "cow"), ("skeletons", "skeleton"), ("zombies", "zombie"))
# Craftax achievement index of each name in `ACHIEVEMENTS`.
_ACHIEVEMENT_INDEX = np.array([Achievement[a.upper()].value for a in ACHIEVEMENTS], dtype=np.int32)
# Craftax `player_direction` (an action id) -> (d_row, d_col).
_DIRECTION_OFFSETS = np.zeros((17, 2), dtype=np.int32)
_DIRECTION_OFFSETS[1:5] = [(0, -1), (0, 1), (-1, 0), (1, 0)]

# Layout of the packed int32 observation row of one slot.
_FIELDS = (
    ("cells", _N_CELLS), ("facing", 2), ("vitals", 4), ("inventory", len(ct.INVENTORY_ITEMS)),
    ("sleeping", 1), ("dead", 1), ("achievements", len(ACHIEVEMENTS)), ("position", 2),
    ("timestep", 1),
)
_SLICES: dict[str, slice] = {}
_offset = 0
for _name, _size in _FIELDS:
  _SLICES[_name] = slice(_offset, _offset + _size)
  _offset += _size
_PACKED_INTS = _offset
del _offset, _name, _size


def seed_key_data(seeds: Sequence[int]) -> np.ndarray:
  """uint32 [n, 2] threefry key data of each seed (a non-negative int < 2**64)."""
  out = np.zeros((len(seeds), 2), dtype=np.uint32)
  for i, seed in enumerate(seeds):
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
      raise TypeError(f"seeds must be ints, got {seed!r}")
    seed = int(seed)
    if not 0 <= seed < 2**64:
      raise ValueError(f"seeds must be in [0, 2**64), got {seed}")
    out[i] = (seed >> 32, seed & 0xFFFFFFFF)
  return out


def _key(data: jax.Array, *path: jax.Array | int) -> jax.Array:
  """Raw (legacy uint32) key folded along `path` from key data [2]."""
  key = jax.random.wrap_key_data(data, impl="threefry2x32")
  for p in path:
    key = jax.random.fold_in(key, p)
  return jax.random.key_data(key)


def _observe_one(state: EnvState) -> jax.Array:
  """int32 [_PACKED_INTS]: everything the text needs, for one slot."""
  pos = state.player_position
  pad = max(_H, _W)
  padded = jnp.pad(state.map, pad, constant_values=BlockType.OUT_OF_BOUNDS.value)
  corner = pos - jnp.array([_H // 2, _W // 2]) + pad
  blocks = jax.lax.dynamic_slice(padded, corner, (_H, _W)).reshape(-1)
  cells = jnp.asarray(_BLOCK_TO_CELL)[blocks]
  for group, name in _MOBS:
    mobs = getattr(state, group)
    local = mobs.position - pos + jnp.array([_H // 2, _W // 2])
    on = mobs.mask & jnp.all((local >= 0) & (local < jnp.array([_H, _W])), axis=-1)
    flat = jnp.where(on, local[:, 0] * _W + local[:, 1], _N_CELLS)  # _N_CELLS: dropped
    cells = cells.at[flat].set(ct.CELL_IDS[name], mode="drop")
  inv = state.inventory
  dead = (state.player_health <= 0) | (state.map[pos[0], pos[1]] == BlockType.LAVA.value)
  parts = [
      cells,
      jnp.asarray(_DIRECTION_OFFSETS)[state.player_direction],
      jnp.stack([state.player_health, state.player_food, state.player_drink, state.player_energy]),
      jnp.stack([getattr(inv, item) for item in ct.INVENTORY_ITEMS]),
      state.is_sleeping[None],
      dead[None],
      state.achievements[jnp.asarray(_ACHIEVEMENT_INDEX)],
      pos,
      jnp.asarray(state.timestep)[None],
  ]
  return jnp.concatenate([jnp.asarray(p, jnp.int32).reshape(-1) for p in parts])


class _Fns(NamedTuple):
  step: Any
  reset: Any
  observe: Any
  template: Any
  batch_sharding: Any  # NamedSharding of a slot-axis array over the mesh (None: no mesh)


def batch_mesh(local_devices: int | None = None, num_envs: int | None = None) -> Mesh:
  """A 1-D "batch" mesh over `local_devices` devices of every JAX process.

  None uses all of each process's devices, at most `num_envs` of them (one slot per
  device at least). Devices are ordered by process, so each process's slots are a
  contiguous block of the global batch.
  """
  n_local = jax.local_device_count()
  d = n_local if local_devices is None else int(local_devices)
  if not 1 <= d <= n_local:
    raise ValueError(f"devices must be in [1, {n_local}] (this process's devices), got {d}")
  if num_envs is not None:
    d = min(d, num_envs)
  devices = []
  for p in range(jax.process_count()):
    own = sorted((x for x in jax.devices() if x.process_index == p), key=lambda x: x.id)
    devices.extend(own[:d])
  return Mesh(np.array(devices), ("batch",))


DYNAMICS = {"local": craftax_step_local, "craftax": craftax_step}


@functools.cache
def _compiled(params: EnvParams, static_params: StaticEnvParams, dynamics: str = "local",
              mesh: Mesh | None = None) -> _Fns:
  """The jitted batch functions for one parameter set (and mesh), shared by all envs."""
  game_step = DYNAMICS[dynamics]

  def world(key_data):
    return generate_world(_key(key_data, 0), params, static_params)

  def step_one(state, key_data, action):
    return game_step(_key(key_data, 1, state.timestep), state, action, params, static_params)

  # Canonical dtypes: what the step returns, strongly typed.
  abstract = jax.eval_shape(world, jax.ShapeDtypeStruct((2,), jnp.uint32))
  stepped, _ = jax.eval_shape(step_one, abstract, jax.ShapeDtypeStruct((2,), jnp.uint32), 0)
  dtypes = jax.tree.map(lambda s: s.dtype, stepped)

  def canon(tree):
    return jax.tree.map(lambda x, d: jax.lax.convert_element_type(x, d), tree, dtypes)

  def observe(state):
    ints = jax.vmap(_observe_one)(state)
    return ints, state.light_level.astype(jnp.float32)

  # Every array with a slot axis is split over the mesh; the reset chunk too.
  rows = NamedSharding(mesh, PartitionSpec("batch")) if mesh is not None else None
  state_rows = jax.tree.map(lambda _: rows, stepped) if rows is not None else None
  sharded = dict(donate_argnums=0)
  if rows is not None:
    sharded.update(in_shardings=(state_rows, rows, rows, rows),
                   out_shardings=(state_rows, rows, (rows, rows)))

  @functools.partial(jax.jit, **sharded)
  def step(state, key_data, actions, active):
    new, reward = jax.vmap(step_one)(state, key_data, actions)
    new = canon(new)

    def keep(n, o):
      return jnp.where(active.reshape((-1,) + (1,) * (n.ndim - 1)), n, o)

    state = jax.tree.map(keep, new, state)
    return state, jnp.where(active, reward, 0.0).astype(jnp.float32), observe(state)

  if rows is not None:
    sharded.update(in_shardings=(state_rows, rows, rows), out_shardings=(state_rows, (rows, rows)))

  @functools.partial(jax.jit, **sharded)
  def reset(state, slots, key_data):
    fresh = canon(jax.vmap(world)(key_data))
    state = jax.tree.map(lambda full, new: full.at[slots].set(new), state, fresh)
    return state, observe(fresh)

  def template(num_envs):
    zeros = functools.partial(
        jax.tree.map, lambda s: jnp.zeros((num_envs, *s.shape), s.dtype), stepped)
    return jax.jit(zeros, out_shardings=state_rows)() if rows is not None else zeros()

  return _Fns(step=step, reset=reset, observe=jax.jit(observe), template=template,
              batch_sharding=rows)


def unpack_view(ints: np.ndarray, light: np.ndarray) -> ct.CrafterView:
  """The `CrafterView` of packed observation rows (int32 [B, K], float32 [B])."""
  return ct.CrafterView(
      cells=ints[:, _SLICES["cells"]].reshape(-1, _H, _W),
      facing=ints[:, _SLICES["facing"]],
      vitals=ints[:, _SLICES["vitals"]],
      inventory=ints[:, _SLICES["inventory"]],
      sleeping=ints[:, _SLICES["sleeping"]][:, 0].astype(bool),
      dead=ints[:, _SLICES["dead"]][:, 0].astype(bool),
      daylight=np.asarray(light),
  )


def view_from_state(
    state: EnvState, params: EnvParams | None = None, static_params: StaticEnvParams | None = None
) -> ct.CrafterView:
  """The `CrafterView` of a batched Craftax-Classic state (leading slot axis)."""
  fns = _compiled(params or EnvParams(), static_params or StaticEnvParams())
  ints, light = jax.device_get(fns.observe(state))
  return unpack_view(ints, light)


def _infos(ints: np.ndarray, light: np.ndarray) -> list[dict[str, Any]]:
  """The JSON-serialisable `Observation.info` of each packed row."""
  steps = ints[:, _SLICES["timestep"]][:, 0].tolist()
  positions = ints[:, _SLICES["position"]].tolist()
  facing = ints[:, _SLICES["facing"]]
  facing_names = np.array([*ct.FACING, "?"], dtype=object)[
      np.select([facing[:, 0] < 0, facing[:, 0] > 0, facing[:, 1] < 0, facing[:, 1] > 0], [0, 1, 2, 3], 4)
  ].tolist()
  vitals = ints[:, _SLICES["vitals"]].tolist()
  inventory = ints[:, _SLICES["inventory"]].tolist()
  sleeping = ints[:, _SLICES["sleeping"]][:, 0].astype(bool).tolist()
  daylight = np.asarray(light, np.float64).tolist()
  # The local view as cell names (row 0 north, column 0 west, the player at ct.CENTER), a
  # typed field for helper observers and action checks.
  views = np.array(ct.CELL_NAMES, dtype=object)[
      ints[:, _SLICES["cells"]].reshape(-1, _H, _W)].tolist()
  items = ct.INVENTORY_ITEMS
  return [
      {
          "step": steps[j],
          "position": positions[j],
          "facing": facing_names[j],
          "vitals": dict(zip(ct.VITALS, vitals[j])),
          "inventory": {k: c for k, c in zip(items, inventory[j]) if c},
          "sleeping": sleeping[j],
          "daylight": daylight[j],
          "view": views[j],
      }
      for j in range(len(steps))
  ]


class CrafterEnv(TextEnv):
  """Crafter (Craftax-Classic) with text observations; see the module docstring.

  Args:
    num_envs: number of slots B.
    max_steps: the episode cap (`end_reason="step_cap"`).
    location_style: "offset" ("1 step south and 4 steps west") or "classic"
      (BALROG's "5 steps to your south-west").
    skip_items: cell names left out of "You see" (default: none of the ground,
      as BALROG; `crafter_text.COMPACT_SKIP` leaves out grass, sand and path).
    params: Craftax-Classic `EnvParams` (day length, spawn rates, ...).
    reset_chunk: worlds generated per reset call (at most `num_envs`); one
      compiled shape, padded when fewer slots are reset.
    dynamics: "local" (default; Craftax's step with the windowed mob-spawn
      sampler of `crafter_dynamics`, ~4x faster on CPU, same rules and
      distribution) or "craftax" (Craftax's `craftax_step` unchanged).
    devices: local devices the slots are sharded over (None: all, at most
      `num_envs`; 1: no sharding); the same number in every process.
  """

  game = "crafter"

  def __init__(
      self,
      num_envs: int,
      *,
      max_steps: int = 2000,
      location_style: str = "offset",
      skip_items: tuple[str, ...] = ct.DEFAULT_SKIP,
      params: EnvParams | None = None,
      reset_chunk: int = 8,
      dynamics: str = "local",
      devices: int | None = None,
  ) -> None:
    if num_envs < 1:
      raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    if max_steps < 1:
      raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    if location_style not in ct.STYLES:
      raise ValueError(f"location_style must be one of {ct.STYLES}, got {location_style!r}")
    if dynamics not in DYNAMICS:
      raise ValueError(f"dynamics must be one of {tuple(DYNAMICS)}, got {dynamics!r}")
    if reset_chunk < 1:
      raise ValueError(f"reset_chunk must be >= 1, got {reset_chunk}")
    self._n = num_envs
    self.mesh = batch_mesh(devices, num_envs)
    d = self.mesh.size // jax.process_count()  # this process's devices in the mesh
    # This process's rows of the global batch: its slots, padded to a multiple of `d`.
    self._rows = -(-num_envs // d) * d
    self._first_row = jax.process_index() * self._rows
    self._reset_chunk = -(-min(reset_chunk, num_envs) // d) * d
    self.max_steps = max_steps
    self.location_style = location_style
    self.skip_items = ct.check_skip(skip_items)
    self.dynamics = dynamics
    self._fns = _compiled(params or EnvParams(), StaticEnvParams(), dynamics, self.mesh)
    self._state: EnvState | None = None
    self._key_data = np.zeros((self._rows, 2), np.uint32)
    self._seeds = [0] * num_envs
    self._started = np.zeros(num_envs, bool)
    self._done = np.zeros(num_envs, bool)
    self._returns = np.zeros(num_envs, np.float64)
    self._unlocked = np.zeros((num_envs, len(ACHIEVEMENTS)), bool)
    self._order: list[list[str]] = [[] for _ in range(num_envs)]
    self._stats: list[EpisodeStats | None] = [None] * num_envs
    self._last_obs: list[Observation | None] = [None] * num_envs
    # Cumulative seconds of `step`: the jitted step + fetch, text rendering, the rest.
    self.timings = {"device_s": 0.0, "render_s": 0.0, "host_s": 0.0}

  @property
  def num_envs(self) -> int:
    return self._n

  @property
  def action_names(self) -> tuple[str, ...]:
    return ct.ACTION_NAMES

  @property
  def state(self) -> EnvState | None:
    """The batched Craftax state (read-only use: tests, tools); sharded over `mesh`, with
    the padding rows (if any) after each process's slots."""
    return self._state

  @property
  def num_devices(self) -> int:
    """Devices the batch is sharded over (all processes)."""
    return self.mesh.size

  def _put(self, rows: np.ndarray) -> jax.Array:
    """This process's rows as its part of a global slot-axis array on the mesh."""
    return jax.make_array_from_process_local_data(self._fns.batch_sharding, rows)

  @staticmethod
  def _fetch(arrays: Any) -> Any:
    """This process's rows of global slot-axis arrays, as numpy (in slot order)."""
    if jax.process_count() == 1:
      return jax.device_get(arrays)

    def own(x):
      shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
      return np.concatenate([np.asarray(s.data) for s in shards])

    return jax.tree.map(own, arrays)

  def stats(self, index: int) -> EpisodeStats | None:
    """The current (or final) metrics of slot `index`; None before its first reset."""
    return self._stats[index]

  # -- reset ------------------------------------------------------------------

  def reset(self, seeds: Sequence[int], indices: Sequence[int] | None = None) -> list[Observation]:
    if indices is None:
      if len(seeds) != self._n:
        raise ValueError(f"reset without indices needs {self._n} seeds, got {len(seeds)}")
      indices = range(self._n)
    indices = [int(i) for i in indices]
    if len(indices) != len(seeds):
      raise ValueError(f"got {len(seeds)} seeds for {len(indices)} slots")
    if len(set(indices)) != len(indices) or any(not 0 <= i < self._n for i in indices):
      raise ValueError(f"slot indices must be distinct and in [0, {self._n}), got {indices}")
    if not indices:
      return []
    key_data = seed_key_data(seeds)
    if self._state is None:
      self._state = self._fns.template(self._rows * jax.process_count())
    n = len(indices)
    k = self._reset_chunk
    pad = -n % k  # pad with the first slot again: the same world written twice
    slots = np.asarray(indices + indices[:1] * pad, np.int32) + self._first_row
    keys = np.concatenate([key_data, np.repeat(key_data[:1], pad, axis=0)])
    parts = []
    for c in range(0, n + pad, k):
      self._state, packed = self._fns.reset(
          self._state, self._put(slots[c : c + k]), self._put(keys[c : c + k]))
      parts.append(packed)
    ints, light = (np.concatenate(x) for x in zip(*self._fetch(parts)))
    for j, i in enumerate(indices):
      self._key_data[i] = key_data[j]
      self._seeds[i] = int(seeds[j])
      self._started[i] = True
      self._done[i] = False
      self._returns[i] = 0.0
      self._unlocked[i] = False
      self._order[i] = []
      self._stats[i] = EpisodeStats(game=self.game, task="crafter", seed=int(seeds[j]))
    ints, light = ints[:n], light[:n]
    texts = ct.render_text(unpack_view(ints, light), self.location_style, self.skip_items)
    observations = [Observation(t, info) for t, info in zip(texts, _infos(ints, light))]
    for i, obs in zip(indices, observations):
      self._last_obs[i] = obs
    return observations

  # -- step -------------------------------------------------------------------

  def step(self, actions: Sequence[str | None]) -> list[StepResult | None]:
    check_batch(actions, self._n)
    t0 = time.perf_counter()
    ids = np.zeros(self._rows, np.int32)
    active = np.zeros(self._rows, bool)
    feedback = [""] * self._n
    valid = [True] * self._n
    results: list[StepResult | None] = [None] * self._n
    for i, action in enumerate(actions):
      if action is None:
        continue
      if not self._started[i]:
        raise ValueError(f"slot {i} was never reset; call reset before stepping it")
      if self._done[i]:
        results[i] = self._finished_result(i)
        continue
      a = ct.parse_action(action)
      if a is None:
        a, valid[i], feedback[i] = ct.NOOP, False, ct.invalid_action_feedback(action)
      ids[i], active[i] = a, True
    if not active.any():
      return results

    t1 = time.perf_counter()
    self._state, reward, (ints, light) = self._fns.step(
        self._state, self._put(self._key_data), self._put(ids), self._put(active))
    reward, ints, light = self._fetch((reward, ints, light))
    t2 = time.perf_counter()
    slots = np.flatnonzero(active)
    ints, light, reward = ints[slots], light[slots], reward[slots]
    texts = ct.render_text(unpack_view(ints, light), self.location_style, self.skip_items)
    t3 = time.perf_counter()

    # Episode bookkeeping for all stepped slots at once.
    self._returns[slots] += reward
    lengths = ints[:, _SLICES["timestep"]][:, 0]
    unlocked = ints[:, _SLICES["achievements"]].astype(bool)
    for j in np.flatnonzero((unlocked & ~self._unlocked[slots]).any(axis=1)):
      i = slots[j]
      new = np.flatnonzero(unlocked[j] & ~self._unlocked[i])
      self._order[i].extend(ACHIEVEMENTS[k] for k in new)
    self._unlocked[slots] = unlocked
    dead = ints[:, _SLICES["dead"]][:, 0].astype(bool)
    capped = lengths >= self.max_steps
    self._done[slots] = dead | capped
    ends = np.where(dead, "death", np.where(capped, "step_cap", "running")).tolist()
    progress = (100.0 * unlocked.sum(axis=1) / len(ACHIEVEMENTS)).tolist()
    infos = _infos(ints, light)
    for i, text, r, length, end, prog, info in zip(
        slots.tolist(), texts, reward.tolist(), lengths.tolist(), ends, progress, infos
    ):
      stats = EpisodeStats(
          game=self.game,
          task="crafter",
          seed=self._seeds[i],
          episode_return=float(self._returns[i]),
          length=length,
          achievements=tuple(self._order[i]),
          progression=prog,
          end_reason=end,
      )
      self._stats[i] = stats
      obs = self._last_obs[i] = Observation(text, info)
      results[i] = StepResult(obs, r, end != "running", valid[i], feedback[i], stats)
    t4 = time.perf_counter()
    self.timings["device_s"] += t2 - t1
    self.timings["render_s"] += t3 - t2
    self.timings["host_s"] += (t1 - t0) + (t4 - t3)
    return results

  def _finished_result(self, i: int) -> StepResult:
    stats = self._stats[i]
    feedback = "The episode is over; reset this slot to play again."
    return StepResult(self._last_obs[i], 0.0, True, True, feedback, stats)
