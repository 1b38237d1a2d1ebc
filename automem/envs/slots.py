"""Single-slot envs and the batch bookkeeping shared by in-process and pooled hosts.

A *slot env* is one game instance: `reset(seed) -> Observation`,
`step(action_name) -> StepResult`, `action_names`, `close()`, and optionally an
`action_reader` (picklable; `NameReader` of its names when absent). NLE games,
MiniHack tasks and the original `crafter` package are written as slot envs;
`SerialEnv` hosts a batch of them in this process and `EnvPool`
(`automem.envs.pool`) hosts them in worker processes. Both are `TextEnv`s.

A slot env is built by a *factory*: a picklable zero-argument callable such as
`functools.partial(NLESlotEnv, "minihack", "MiniHack-Corridor-R3-v0", max_steps=100)`,
so a worker process can build its own copy.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from automem.envs.base import (
    ActionReader,
    EpisodeStats,
    NameReader,
    Observation,
    StepResult,
    TextEnv,
    check_batch,
)


@runtime_checkable
class SlotEnv(Protocol):
  """One game instance behind readable text actions."""

  game: str
  task: str

  @property
  def action_names(self) -> tuple[str, ...]: ...

  def reset(self, seed: int) -> Observation: ...

  def step(self, action: str) -> StepResult: ...

  def close(self) -> None: ...


SlotFactory = Callable[[], SlotEnv]


def error_observation(reason: str) -> Observation:
  return Observation(text=f"(the environment failed: {reason})", info={"error": reason})


def slot_reader(env: SlotEnv) -> ActionReader:
  """A slot env's `action_reader`, or the plain `NameReader` of its action names."""
  reader = getattr(env, "action_reader", None)
  return reader if reader is not None else NameReader(tuple(env.action_names))


class SlotBook:
  """Per-slot episode bookkeeping: started, done, last stats, lost episodes.

  Shared by `SerialEnv` and `EnvPool` so both answer the corner cases the same
  way: stepping a slot that was never reset is an error; stepping a finished
  slot returns its final result again; an episode lost to a failure ends with
  end reason "error" at its next step.
  """

  def __init__(self, num_envs: int, game: str, task: str):
    self.num_envs, self.game, self.task = num_envs, game, task
    self.stats: list[EpisodeStats | None] = [None] * num_envs
    self.done = [False] * num_envs
    self.last_obs: list[Observation | None] = [None] * num_envs
    self.lost: list[str | None] = [None] * num_envs

  def check_reset_args(self, seeds: Sequence[int], indices: Sequence[int] | None) -> list[int]:
    idx = list(range(self.num_envs)) if indices is None else [int(i) for i in indices]
    if len(seeds) != len(idx):
      raise ValueError(f"got {len(seeds)} seeds for {len(idx)} slots")
    bad = [i for i in idx if not 0 <= i < self.num_envs]
    if bad:
      raise ValueError(f"slot indices {bad} out of range [0, {self.num_envs})")
    if len(set(idx)) != len(idx):
      raise ValueError(f"slot indices repeat: {idx}")
    return idx

  def started(self, slot: int, seed: int, obs: Observation) -> None:
    self.stats[slot] = EpisodeStats(game=self.game, task=self.task, seed=int(seed))
    self.done[slot] = False
    self.last_obs[slot] = obs
    self.lost[slot] = None

  def failed_reset(self, slot: int, seed: int, reason: str) -> Observation:
    obs = error_observation(reason)
    self.started(slot, seed, obs)
    self.lost[slot] = reason
    return obs

  def triage(self, actions: Sequence[str | None]) -> tuple[list[StepResult | None], list[int]]:
    """Answers what needs no env; returns (results so far, slots to step)."""
    check_batch(actions, self.num_envs)
    unstarted = [s for s, a in enumerate(actions) if a is not None and self.stats[s] is None]
    if unstarted:  # checked before anything changes, so a bad call loses nothing
      raise RuntimeError(f"slots {unstarted} were stepped before they were reset")
    results: list[StepResult | None] = [None] * self.num_envs
    todo = []
    for slot, action in enumerate(actions):
      if action is None:
        continue
      if self.lost[slot] is not None:
        results[slot] = self.error(slot, self.lost[slot])
      elif self.done[slot]:
        results[slot] = StepResult(
            self.last_obs[slot], 0.0, True, False, "The episode has ended; reset this slot to play again.",
            self.stats[slot],
        )
      else:
        todo.append(slot)
    return results, todo

  def record(self, slot: int, result: StepResult) -> StepResult:
    self.stats[slot] = result.stats
    self.done[slot] = result.done
    self.last_obs[slot] = result.observation
    return result

  def error(self, slot: int, reason: str) -> StepResult:
    """Ends the slot's episode with end reason "error"."""
    stats = dataclasses.replace(self.stats[slot], end_reason="error", error=reason)
    self.stats[slot], self.done[slot], self.lost[slot] = stats, True, None
    obs = error_observation(reason)
    self.last_obs[slot] = obs
    return StepResult(obs, 0.0, True, True, f"The environment failed: {reason}", stats)

  def lose_running(self, slots: Sequence[int], reason: str) -> None:
    """Marks running episodes in `slots` as lost; they end at their next step."""
    for s in slots:
      if self.stats[s] is not None and not self.done[s]:
        self.lost[s] = reason


class SerialEnv(TextEnv):
  """A batch of slot envs stepped one after another in this process.

  The in-process peer of `EnvPool`: no worker processes, no timeouts. A slot
  env that raises loses its episode (end reason "error") and is rebuilt.
  """

  def __init__(self, factory: SlotFactory, num_envs: int):
    if num_envs < 1:
      raise ValueError("num_envs must be >= 1")
    self._factory = factory
    self._envs: list[SlotEnv | None] = [factory() for _ in range(num_envs)]
    first = self._envs[0]
    self.game, self.task = first.game, first.task
    self._names = tuple(first.action_names)
    self.action_descriptions = dict(getattr(first, "action_descriptions", {}))
    self._reader = slot_reader(first)
    self._book = SlotBook(num_envs, first.game, first.task)

  @property
  def num_envs(self) -> int:
    return self._book.num_envs

  @property
  def action_names(self) -> tuple[str, ...]:
    return self._names

  @property
  def action_reader(self) -> ActionReader:
    return self._reader

  def _env(self, slot: int) -> SlotEnv:
    if self._envs[slot] is None:
      self._envs[slot] = self._factory()
    return self._envs[slot]

  def _drop(self, slot: int) -> None:
    env, self._envs[slot] = self._envs[slot], None
    with contextlib.suppress(Exception):  # already failing; the reason is recorded
      env.close()

  def reset(self, seeds: Sequence[int], indices: Sequence[int] | None = None) -> list[Observation]:
    idx = self._book.check_reset_args(seeds, indices)
    out = []
    for slot, seed in zip(idx, seeds):
      try:
        obs = self._env(slot).reset(int(seed))
        self._book.started(slot, seed, obs)
      except Exception as e:  # costs only this episode
        self._drop(slot)
        obs = self._book.failed_reset(slot, seed, f"reset raised {type(e).__name__}: {e}")
      out.append(obs)
    return out

  def step(self, actions: Sequence[str | None]) -> list[StepResult | None]:
    results, todo = self._book.triage(actions)
    for slot in todo:
      try:
        results[slot] = self._book.record(slot, self._env(slot).step(actions[slot]))
      except Exception as e:  # costs only this episode
        self._drop(slot)
        results[slot] = self._book.error(slot, f"step raised {type(e).__name__}: {e}")
    return results

  def close(self) -> None:
    for slot in range(len(self._envs)):
      if self._envs[slot] is not None:
        self._drop(slot)
