"""Replaying recorded episodes: env state from seed + actions, checked against the record.

Every env is deterministic given its seed and the actions taken (Craftax by
construction, NetHack/MiniHack through NLE's seeds), and a trajectory records
both plus the env settings (`Trajectory.replay_spec()`). `replay_prefixes`
rebuilds many env states at once -- one batched env, every slot reset with
its episode's seed and stepped through its action prefix -- which is what a
counterfactual fork starts from. `check_replay` replays a whole episode and
lists every observation, reward or memory state that differs from the record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

from automem.agent.trajectory import Trajectory, replay_memory
from automem.envs import EpisodeStats, Observation, TextEnv, make_env
from automem.memory import MemoryStore

EnvFactory = Callable[..., TextEnv]


def settings_key(game: str, settings: dict[str, Any]) -> str:
  """A hashable key of (game, env settings): forks with the same key share one env."""
  return json.dumps([game, settings], sort_keys=True)


def replay_prefixes(env: TextEnv, seeds: Sequence[int], prefixes: Sequence[Sequence[str]]
                    ) -> list[tuple[Observation, EpisodeStats | None, bool]]:
  """Resets slot i of `env` with `seeds[i]` and plays `prefixes[i]`, all slots together.

  Returns:
    Per slot: the observation after its prefix, the episode's stats then
    (None for an empty prefix) and whether the episode had already ended.
  """
  n = len(seeds)
  if len(prefixes) != n or env.num_envs < n:
    raise ValueError(f"{n} seeds, {len(prefixes)} prefixes for {env.num_envs} env slots")
  obs = env.reset(list(seeds), list(range(n)))
  out: list[tuple[Observation, EpisodeStats | None, bool]] = [(o, None, False) for o in obs]
  longest = max((len(p) for p in prefixes), default=0)
  for t in range(longest):
    actions: list[str | None] = [None] * env.num_envs
    for i, p in enumerate(prefixes):
      if t < len(p) and not out[i][2]:
        actions[i] = p[t]
    results = env.step(actions)
    for i, r in enumerate(results[:n]):
      if r is not None:
        out[i] = (r.observation, r.stats, r.done)
  return out


def check_replay(traj: Trajectory, *, structure: Any = None, memory_root: str | None = None,
                 env_factory: EnvFactory = make_env) -> list[str]:
  """Replays a finished episode on a fresh env (and its memory on a fresh store).

  Returns:
    The mismatches (empty when the replay reproduces the record exactly).
  """
  spec = traj.replay_spec()
  problems: list[str] = []
  env = env_factory(spec["game"], 1, **spec["env_settings"])
  try:
    obs = env.reset([spec["seed"]], [0])[0]
    if traj.header.initial_observation is not None and obs.text != traj.header.initial_observation:
      problems.append("the first observation differs")
    for s in traj.steps:
      r = env.step([s.action])[0]
      if r is None:
        problems.append(f"step {s.step}: the env took no step")
        break
      if abs(float(r.reward) - s.reward) > 1e-6:
        problems.append(f"step {s.step}: reward {r.reward} != recorded {s.reward}")
      if s.observation is not None and r.observation.text != s.observation:
        problems.append(f"step {s.step}: the observation differs")
      if bool(r.done) != s.done:
        problems.append(f"step {s.step}: done {r.done} != recorded {s.done}")
  finally:
    env.close()
  if memory_root is not None and traj.header.initial_memory is not None:
    store = _fresh_store(memory_root, structure, traj.header.initial_memory)
    problems += replay_memory(traj, store, structure)
  return problems


def _fresh_store(root: str, structure: Any, files: dict[str, str]) -> MemoryStore:
  os.makedirs(os.path.dirname(os.path.abspath(root)) or ".", exist_ok=True)
  store = (MemoryStore.from_structure(root, structure) if structure is not None
           else MemoryStore(root))
  store.restore(files)
  return store
