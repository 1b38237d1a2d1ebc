"""Playing versions on seed blocks: one ordinary evaluation run dir per (version, block).

A *version* is a saved `MemoryStructure` (`<workdir>/structures/<id>.json`).
`Evaluator.play(version, seed_set, offset, n, ...)` plays it on `n` seeds of
a named set through `automem.rollout.evaluate` into
`<workdir>/evals/<tag>/<id>` and returns per-unit scores (`"<task>/<seed>"`)
and the episodes' metrics. A run dir whose episodes are all finished is
read back without starting envs or clients, so a resumed loop replays
nothing it has played.

Seed discipline: the loop plays `selection` seeds; `test` seeds only
through `final=True`, which the final evaluation alone passes (and which a
test checks). Anything else is refused here, in the one place that plays.
"""

from __future__ import annotations

import asyncio
import copy
import os
from collections.abc import Mapping
from typing import Any

import ml_collections

from automem.llm import make_client
from automem.memory import MemoryStructure
from automem.rollout.evaluate import build_plans, evaluate
from automem.rollout.metrics import EpisodeMetrics, is_error
from automem.rollout.rundir import RunDir, atomic_write_json

METRICS = ("progression", "return", "dense")


class SeedDisciplineError(ValueError):
  """The loop asked for seeds it may not play (test seeds before the final evaluation)."""


def score(m: EpisodeMetrics, metric: str) -> float:
  """An episode's score: "progression", "return", or "dense" (`dense_score`)."""
  if metric == "progression":
    return m.progression
  if metric == "return":
    return float(m.stats.get("episode_return", 0.0))
  if metric == "dense":
    return dense_score(m)
  raise ValueError(f"unknown metric {metric!r}; known: {METRICS}")


def _deepest(achievements: set[str], prefix: str) -> int:
  return max((int(a.split(":", 1)[1]) for a in achievements
              if a.startswith(prefix + ":") and a.split(":", 1)[1].isdigit()), default=0)


def dense_score(m: EpisodeMetrics) -> float:
  """The screening score of capped episodes, read from the end record's stats.

  NLE games (NetHack, MiniHack: milestones "Dlvl:N" and "Xp:N")::

    progression + deepest dungeon level + highest experience level [+ score / 100]

  the last term for NetHack only: NetHackChallenge's reward is the change of the in-game
  score, so the episode's return is the score it gained (100 points count as one level).
  Other games: progression + the number of distinct achievements reached.
  """
  reached = set(m.stats.get("achievements", ()))
  depth, level = _deepest(reached, "Dlvl"), _deepest(reached, "Xp")
  if not (depth or level):
    return m.progression + len(reached)
  gained = max(float(m.stats.get("episode_return", 0.0)), 0.0) if m.game == "nethack" else 0.0
  return m.progression + depth + level + gained / 100.0


def unit(m: EpisodeMetrics) -> str:
  return f"{m.task}/{m.seed}"


class Evaluator:
  """Plays versions of one game's structure with the loop's evaluation config.

  Args:
    workdir: the loop's run directory.
    eval_config: an `experiments/configs/evaluate.py` config (agent, llm, game settings).
    game: the game whose structure is optimised.
    clients, env_factory: passed to `automem.rollout.evaluate` (tests inject them).
  """

  def __init__(self, workdir: str, eval_config: ml_collections.ConfigDict, game: str, *,
               clients: Mapping[str, Any] | None = None, env_factory: Any = None):
    self.workdir = workdir
    self.eval_config = eval_config
    self.game = game
    self.clients = clients
    self._own_clients: dict[str, Any] | None = None
    self.env_factory = env_factory
    self.episodes_played = 0  # episodes this process actually played (not read back)
    os.makedirs(os.path.join(workdir, "structures"), exist_ok=True)

  def _agent_clients(self) -> Mapping[str, Any]:
    """The injected clients, or ones built once from the config and kept for every evaluation
    (a local engine compiles once, a server connection is reused)."""
    if self.clients is not None:
      return self.clients
    if self._own_clients is None:
      c = self.eval_config
      self._own_clients = {"base": make_client(c.llm)}
      if c.agent.two_model and c.agent.specialist_endpoint:
        self._own_clients["specialist"] = make_client(c.specialist_llm)
    return self._own_clients

  def close(self) -> None:
    """Closes the clients this evaluator built."""
    own, self._own_clients = self._own_clients, None
    for client in (own or {}).values():
      asyncio.run(client.close())

  def structure_path(self, version: str) -> str:
    return os.path.join(self.workdir, "structures", f"{version}.json")

  def save(self, version: str, structure: MemoryStructure) -> None:
    path = self.structure_path(version)
    if os.path.exists(path):
      if MemoryStructure.load(path).to_dict() != structure.to_dict():
        raise ValueError(f"{path} already holds a different structure")
      return
    atomic_write_json(path, structure.to_dict())

  def load(self, version: str) -> MemoryStructure:
    return MemoryStructure.load(self.structure_path(version))

  def config_for(self, version: str, seed_set: str, offset: int, n: int, *,
                 max_steps: int = 0, sampling_seed: int | None = None,
                 agent: Mapping[str, Any] | None = None) -> ml_collections.ConfigDict:
    c = copy.deepcopy(self.eval_config)
    with c.unlocked():
      for key, value in (agent or {}).items():  # an arm's agent settings (Loop 2: the adapter)
        c.agent[key] = value
      c.games = self.game
      c.seed_set = seed_set
      c.seed_offset = offset
      c.episodes_per_task = n
      c.progress = False
      g = c.game[self.game]
      g.episodes = -1
      g.structure = self.structure_path(version)
      g.structure_overrides = ml_collections.ConfigDict()  # baked into v0 already
      if max_steps:
        g.max_steps = max_steps
      if sampling_seed is not None:
        c.agent.seed = sampling_seed
    return c

  def play(self, version: str, tag: str, seed_set: str, offset: int, n: int, *,
           metric: str = "progression", max_steps: int = 0, sampling_seed: int | None = None,
           final: bool = False, name: str = "", agent: Mapping[str, Any] | None = None
           ) -> tuple[dict[str, float], list[EpisodeMetrics], str]:
    """Plays (or reads back) `version` on seeds `offset..offset+n-1` of `seed_set` into
    `evals/<tag>/<name or version>`.

    `agent`: agent-config overrides of this arm (Loop 2: two_model and the specialist adapter).

    Returns:
      unit -> score (errored episodes left out: they say nothing about play),
      the episodes' metrics, and the run dir.
    """
    if seed_set == "test" and not final:
      raise SeedDisciplineError("the loops play train and selection seeds only; test seeds are "
                                "for the final evaluation")
    if seed_set not in ("selection", "train", "test"):
      raise SeedDisciplineError(f"unknown seed set {seed_set!r}")
    if final and seed_set != "test":
      raise SeedDisciplineError("the final evaluation plays test seeds")
    config = self.config_for(version, seed_set, offset, n, max_steps=max_steps,
                             sampling_seed=sampling_seed, agent=agent)
    workdir = os.path.join(self.workdir, "evals", tag, name or version)
    run_dir = RunDir(workdir)
    plans = build_plans(config)
    ids = [p.episode_id for p in plans]
    if run_dir.finished(ids) != set(ids):
      before = len(run_dir.finished(ids))
      kwargs = {"env_factory": self.env_factory} if self.env_factory is not None else {}
      evaluate(config, workdir, clients=self._agent_clients(), **kwargs)
      self.episodes_played += len(ids) - before
    records = run_dir.episode_metrics(ids)
    scores = {unit(m): score(m, metric) for m in records if not is_error(m)}
    return scores, records, workdir
