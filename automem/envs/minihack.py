"""MiniHack tasks as a batched text env in a worker pool.

    env = make_env("minihack", num_envs=4, task="Corridor-R3")

`task` is a full MiniHack id ("MiniHack-Quest-Easy-v0") or its short form
("Quest-Easy"); `BALROG_TASKS` are the eight tasks BALROG and the paper use.
Defaults follow BALROG: a random role, 100 steps per episode, step penalty
-0.01, and BALROG's success rule: progression is 100 when the episode's last
reward is at least 1.0, else 0. A role fast enough to reach the goal in a move
that takes no game time gets 0.99 (1 minus the step penalty) and counts as a
failure there; `success_rule="goal"` counts every solved task (the end reason
is "goal" either way). See docs/balrog_compatibility.md.

Boxoban levels: MiniHack-Boxoban-* read level files that minihack downloads
from the internet into `<minihack>/dat/boxoban-levels-master/`. Here they are
taken from a directory given as `boxoban_dir=` or the environment variable
`AUTOMEM_BOXOBAN_DIR` (a copy of deepmind/boxoban-levels with `hard/` and
`medium/train/`); the worker points minihack at it, nothing is written into
the minihack package. With internet, fetch them once with
`python -m minihack.scripts.download_boxoban_levels` (or clone
https://github.com/deepmind/boxoban-levels) and point the variable at them.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from automem.envs.base import TextEnv
from automem.envs.nle_env import NLESlotEnv
from automem.envs.pool import host_slots

BALROG_TASKS = (
    "MiniHack-Boxoban-Hard-v0",
    "MiniHack-Boxoban-Medium-v0",
    "MiniHack-MazeWalk-9x9-v0",
    "MiniHack-MazeWalk-15x15-v0",
    "MiniHack-Corridor-R3-v0",
    "MiniHack-CorridorBattle-Dark-v0",
    "MiniHack-Quest-Easy-v0",
    "MiniHack-Quest-Medium-v0",
)
DEFAULT_TASK = "MiniHack-Corridor-R3-v0"
BOXOBAN_ENV_VAR = "AUTOMEM_BOXOBAN_DIR"
# Level subfolders each Boxoban task reads (minihack's level_set/level_mode).
_BOXOBAN_SUBDIRS = {
    "MiniHack-Boxoban-Hard-v0": "hard",
    "MiniHack-Boxoban-Medium-v0": os.path.join("medium", "train"),
    "MiniHack-Boxoban-Unfiltered-v0": os.path.join("unfiltered", "train"),
}
# BALROG's minihack_kwargs.
BALROG_ENV_KWARGS = {
    "character": "@",
    "penalty_step": -0.01,
    "penalty_time": 0.0,
    "penalty_mode": "constant",
    "autopickup": False,
}


def resolve_task(task: str) -> str:
  """Full MiniHack id of `task` ("Corridor-R3" -> "MiniHack-Corridor-R3-v0")."""
  full = task if task.startswith("MiniHack-") else f"MiniHack-{task}"
  if not full.rsplit("-", 1)[-1].startswith("v"):
    full += "-v0"
  return full


def boxoban_levels_dir(task: str, boxoban_dir: str | None = None) -> str | None:
  """The Boxoban levels directory for `task`, checked; None for other tasks.

  Raises:
    FileNotFoundError: naming the fix, when the levels are missing.
  """
  sub = _BOXOBAN_SUBDIRS.get(task)
  if sub is None:
    return None
  root = boxoban_dir or os.environ.get(BOXOBAN_ENV_VAR)
  where = os.path.join(root, sub) if root else None
  if not where or not os.path.isdir(where) or not any(f.endswith(".txt") for f in os.listdir(where)):
    raise FileNotFoundError(
        f"{task} needs the Boxoban level files ({sub}/*.txt), "
        + (f"not found under {root!r}. " if root else f"and neither boxoban_dir nor ${BOXOBAN_ENV_VAR} is set. ")
        + f"Point ${BOXOBAN_ENV_VAR} (or boxoban_dir=) at a copy of github.com/deepmind/boxoban-levels; "
        "with internet, `python -m minihack.scripts.download_boxoban_levels` fetches them "
        "(then use <minihack package>/dat/boxoban-levels-master)."
    )
  return os.path.abspath(root)


class MiniHackSlotEnv(NLESlotEnv):
  """One MiniHack game; points minihack at the Boxoban levels when needed."""

  def __init__(self, task: str, *, boxoban_dir: str | None = None, **kwargs: Any):
    if boxoban_dir is not None:
      import minihack.envs.boxohack as boxohack

      # BoxoHack builds its level path from this module global at construction.
      boxohack.LEVELS_PATH = boxoban_dir
    super().__init__("minihack", task, **kwargs)
    if boxoban_dir is not None and not hasattr(self._env, "_goal_pos_set"):
      # minihack 1.0.2's BoxoHack reads its goal set in the end check of its very
      # first reset, before it has set it; the first reset overwrites this.
      self._env._goal_pos_set = set()


def minihack_slot_factory(
    task: str = DEFAULT_TASK,
    *,
    max_steps: int = 100,
    boxoban_dir: str | None = None,
    nearby_limit: int = 20,
    success_rule: str = "balrog",
    env_kwargs: dict[str, Any] | None = None,
) -> functools.partial:
  """A picklable factory of one MiniHack slot env; checks Boxoban levels first."""
  task = resolve_task(task)
  levels = boxoban_levels_dir(task, boxoban_dir)
  kwargs = {**BALROG_ENV_KWARGS, **(env_kwargs or {})}
  return functools.partial(
      MiniHackSlotEnv, task, boxoban_dir=levels, max_steps=max_steps, no_progress_steps=None,
      nearby_limit=nearby_limit, success_rule=success_rule, env_kwargs=kwargs,
  )


def MiniHackEnv(
    num_envs: int = 1,
    task: str = DEFAULT_TASK,
    *,
    num_workers: int | None = None,
    max_steps: int = 100,
    boxoban_dir: str | None = None,
    nearby_limit: int = 20,
    success_rule: str = "balrog",
    env_kwargs: dict[str, Any] | None = None,
    **pool_kwargs: Any,
) -> TextEnv:
  """A batch of games of one MiniHack task.

  Args:
    num_envs: slots.
    task: MiniHack id or short name (see `BALROG_TASKS`).
    num_workers: worker processes (default one per CPU core); 0 runs in-process.
    max_steps: episode cap in agent steps (BALROG: 100).
    boxoban_dir: Boxoban levels (default `$AUTOMEM_BOXOBAN_DIR`); Boxoban tasks only.
    nearby_limit: most entities listed in the "nearby" section of an observation.
    success_rule: "balrog" (last reward >= 1.0, for comparison with BALROG's
      leaderboard) or "goal" (the task reports success).
    env_kwargs: keyword arguments for `gymnasium.make`, over `BALROG_ENV_KWARGS`.
    **pool_kwargs: `EnvPool` options (step_timeout_s, start_timeout_s).
  """
  factory = minihack_slot_factory(
      task, max_steps=max_steps, boxoban_dir=boxoban_dir, nearby_limit=nearby_limit,
      success_rule=success_rule, env_kwargs=env_kwargs,
  )
  return host_slots(factory, num_envs, num_workers, **pool_kwargs)
