"""NetHack (`NetHackChallenge-v0` from `nle`) as a batched text env in a worker pool.

    env = make_env("nethack", num_envs=8, num_workers=2)
    obs = env.reset(seeds=range(8))
    results = env.step(["far east"] * 8)

Defaults follow BALROG: a random role ("@"), 100k steps per episode, and an
episode ends after 150 consecutive steps in which the game clock did not move
(menus, invalid actions, walking into walls). Progression is BALROG's
milestone table over the deepest level and the highest experience level.
"""

from __future__ import annotations

import functools
from typing import Any

from automem.envs.base import TextEnv
from automem.envs.nle_env import NLESlotEnv
from automem.envs.pool import host_slots

DEFAULT_TASK = "NetHackChallenge-v0"


def nethack_slot_factory(
    task: str = DEFAULT_TASK,
    *,
    max_steps: int = 100_000,
    no_progress_steps: int | None = 150,
    character: str = "@",
    nearby_limit: int = 20,
    env_kwargs: dict[str, Any] | None = None,
) -> functools.partial:
  """A picklable factory of one NetHack slot env (see `NLESlotEnv`)."""
  kwargs = {"character": character, **(env_kwargs or {})}
  return functools.partial(
      NLESlotEnv, "nethack", task, max_steps=max_steps, no_progress_steps=no_progress_steps,
      nearby_limit=nearby_limit, env_kwargs=kwargs,
  )


def NetHackEnv(
    num_envs: int = 1,
    task: str = DEFAULT_TASK,
    *,
    num_workers: int | None = None,
    max_steps: int = 100_000,
    no_progress_steps: int | None = 150,
    character: str = "@",
    nearby_limit: int = 20,
    env_kwargs: dict[str, Any] | None = None,
    **pool_kwargs: Any,
) -> TextEnv:
  """A batch of NetHack games.

  Args:
    num_envs: slots.
    task: an NLE task id (default the NetHack Challenge, as BALROG and the paper).
    num_workers: worker processes (default one per CPU core); 0 runs in-process.
    max_steps: episode cap in agent steps.
    no_progress_steps: end after this many steps without the game clock moving;
      None disables it.
    character: NLE character string ("@" = random role, race, gender, alignment).
    nearby_limit: most entities listed in the "nearby" section of an observation.
    env_kwargs: more keyword arguments for `gymnasium.make`.
    **pool_kwargs: `EnvPool` options (step_timeout_s, start_timeout_s).
  """
  factory = nethack_slot_factory(
      task, max_steps=max_steps, no_progress_steps=no_progress_steps, character=character,
      nearby_limit=nearby_limit, env_kwargs=env_kwargs,
  )
  return host_slots(factory, num_envs, num_workers, **pool_kwargs)
