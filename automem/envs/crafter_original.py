"""The original `crafter` package, hosted per slot in the worker pool.

This is the environment BALROG and the AutoMem paper evaluated on (crafter
1.8, 64x64 world, 9x7 local view), behind the same text renderer
(`crafter_text`), action names, metrics and seeds as the Craftax backend
(`make_env("crafter")`), so the two can be compared episode by episode:

    env = make_env("crafter_original", num_envs=8, num_workers=2)

Seeds: slot seed s plays the first episode of `crafter.Env(seed=s)`, the world
BALROG gets for seed s. An invalid action name takes a Noop (as in BALROG and
the Craftax backend) with a feedback line. The image observation is never
drawn (text only); drawing has no effect on the dynamics.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from automem.envs import crafter_text as ct
from automem.envs.base import EpisodeStats, Observation, StepResult, TextEnv
from automem.envs.crafter_metrics import ACHIEVEMENTS, progression
from automem.envs.pool import host_slots

_H, _W = ct.VIEW_HEIGHT, ct.VIEW_WIDTH
_OBJECT_CELLS = {"Player": "player", "Cow": "cow", "Zombie": "zombie", "Skeleton": "skeleton", "Arrow": "arrow"}


def view_of(env: Any) -> ct.CrafterView:
  """The one-slot `CrafterView` of a running `crafter.Env`."""
  world, player = env._world, env._player
  px, py = (int(v) for v in player.pos)
  cells = np.empty((1, _H, _W), np.int64)
  for row in range(_H):
    for col in range(_W):
      material, obj = world[(px + col - ct.CENTER[1], py + row - ct.CENTER[0])]
      if material is None:
        name = "map edge"
      elif obj is not None:
        kind = type(obj).__name__
        name = ("ripe plant" if obj.ripe else "plant") if kind == "Plant" else _OBJECT_CELLS.get(kind, "unknown")
      else:
        name = material
      cells[0, row, col] = ct.CELL_IDS.get(name, ct.CELL_IDS["unknown"])
  inv = player.inventory
  fx, fy = (int(v) for v in player.facing)
  return ct.CrafterView(
      cells=cells,
      facing=np.array([[fy, fx]]),
      vitals=np.array([[inv[v] for v in ct.VITALS]]),
      inventory=np.array([[inv[k] for k in ct.INVENTORY_ITEMS]]),
      sleeping=np.array([bool(player.sleeping)]),
      dead=np.array([player.health <= 0]),
      daylight=np.array([float(world.daylight)]),
  )


class CrafterOriginalSlotEnv:
  """One game of the original `crafter` with text observations.

  Args:
    max_steps: the episode cap (`end_reason="step_cap"`); BALROG: 2000.
    location_style: "offset" or "classic" (see `crafter_text.render_text`).
    area: world size.
    skip_items: cell names left out of "You see" (see `crafter_text.DEFAULT_SKIP`).
  """

  game = "crafter"
  task = "crafter_original"

  def __init__(
      self,
      *,
      max_steps: int = 2000,
      location_style: str = "offset",
      area: tuple[int, int] = (64, 64),
      skip_items: tuple[str, ...] = ct.DEFAULT_SKIP,
  ):
    import crafter

    if location_style not in ct.STYLES:
      raise ValueError(f"location_style must be one of {ct.STYLES}, got {location_style!r}")
    self.max_steps = int(max_steps)
    self.location_style = location_style
    self.skip_items = ct.check_skip(skip_items)
    self._env = crafter.Env(area=tuple(area), view=(9, 9), length=None, seed=0)
    self._env._obs = lambda: None  # text only: skip drawing the image
    self._stats: EpisodeStats | None = None
    self._done = True

  @property
  def action_names(self) -> tuple[str, ...]:
    return ct.ACTION_NAMES

  def reset(self, seed: int) -> Observation:
    # crafter.Env(seed=s) builds its first world from hash((s, 1)); replay exactly that.
    self._env._seed, self._env._episode = int(seed), 0
    self._env.reset()
    self._order: list[str] = []
    self._done = False
    self._stats = EpisodeStats(game=self.game, task=self.task, seed=int(seed))
    self._last = self._observe()
    return self._last

  def step(self, action: str) -> StepResult:
    if self._stats is None:
      raise RuntimeError("step() before reset()")
    if self._done:
      return StepResult(self._last, 0.0, True, True, "The episode is over; reset this slot to play again.", self._stats)
    a = ct.parse_action(action)
    valid, feedback = a is not None, ""
    if a is None:
      a, feedback = ct.NOOP, ct.invalid_action_feedback(action)
    _, reward, _, info = self._env.step(a)
    for name in ACHIEVEMENTS:
      if info["achievements"][name] > 0 and name not in self._order:
        self._order.append(name)
    length = self._stats.length + 1
    end = "death" if self._env._player.health <= 0 else "step_cap" if length >= self.max_steps else "running"
    self._done = end != "running"
    self._stats = EpisodeStats(
        game=self.game, task=self.task, seed=self._stats.seed,
        episode_return=self._stats.episode_return + float(reward), length=length,
        achievements=tuple(self._order), progression=progression(self._order), end_reason=end,
    )
    self._last = self._observe()
    return StepResult(self._last, float(reward), self._done, valid, feedback, self._stats)

  def close(self) -> None:
    self._env = None

  def _observe(self) -> Observation:
    view = view_of(self._env)
    text = ct.render_text(view, self.location_style, self.skip_items)[0]
    player = self._env._player
    facing = (int(player.facing[1]), int(player.facing[0]))
    info = {
        "step": self._stats.length,
        "position": [int(v) for v in player.pos],
        "facing": {v: k for k, v in ct.FACING.items()}.get(facing, "?"),
        "vitals": {v: int(player.inventory[v]) for v in ct.VITALS},
        "inventory": {k: int(player.inventory[k]) for k in ct.INVENTORY_ITEMS if player.inventory[k]},
        "sleeping": bool(player.sleeping),
        "daylight": float(self._env._world.daylight),
        # The local view as cell names (as Craftax-Classic's info has it), for observers.
        "view": [[ct.CELL_NAMES[int(c)] for c in row] for row in view.cells[0]],
    }
    return Observation(text=text, info=info)


def crafter_original_slot_factory(**kwargs: Any) -> functools.partial:
  """A picklable factory of one original-crafter slot env."""
  return functools.partial(CrafterOriginalSlotEnv, **kwargs)


def CrafterOriginalEnv(
    num_envs: int = 1,
    *,
    num_workers: int | None = None,
    max_steps: int = 2000,
    location_style: str = "offset",
    area: tuple[int, int] = (64, 64),
    skip_items: tuple[str, ...] = ct.DEFAULT_SKIP,
    **pool_kwargs: Any,
) -> TextEnv:
  """A batch of original-crafter games in worker processes (0 workers: in-process).

  Args:
    num_envs: slots.
    num_workers: worker processes (default one per CPU core); 0 runs in-process.
    max_steps: episode cap; BALROG uses 2000.
    location_style: "offset" or "classic" object locations.
    area: world size (crafter's default 64x64).
    skip_items: cell names left out of "You see" (see `crafter_text.DEFAULT_SKIP`).
    **pool_kwargs: `EnvPool` options (step_timeout_s, start_timeout_s).
  """
  factory = crafter_original_slot_factory(
      max_steps=max_steps, location_style=location_style, area=area, skip_items=skip_items
  )
  return host_slots(factory, num_envs, num_workers, **pool_kwargs)
