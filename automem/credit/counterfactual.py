"""Counterfactual replay: what a memory decision changed in the next K steps.

A decision is a turn that changed memory. It is forked: the env state is
rebuilt from the episode's seed and the actions before the decision's step,
the memory from the initial files and the recorded diffs, once with the
decision's diff applied ("with") and once without ("without"). From there a
fresh agent (same structure, same model, PLAN first since the step's LOG has
run; the step's later LOG turns are replayed in neither arm) plays K more
steps; both arms of a sample use the same sampling seeds
(the agent derives them from `AgentConfig.seed` and the episode seed), so
the arms differ by the decision alone. Credit = the mean over samples of
(with - without) in the window: progression gained, reward, milestones
unlocked.

All forks of one game and env setting run in ONE batched env: on Craftax one
vmapped, jitted step advances every fork at once; NetHack/MiniHack forks
run in that env's worker pool. The agents' LLM requests go out together each
round, as in the runner.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from absl import logging

from automem.agent import AgentConfig, EpisodeAgent, Phase
from automem.agent.trajectory import Trajectory
from automem.credit.replay import EnvFactory, replay_prefixes, settings_key
from automem.credit.scored import ScoredTurn, by_path
from automem.envs import make_env
from automem.memory import MemoryStore


@dataclasses.dataclass(frozen=True)
class CounterfactualConfig:
  """How decisions are forked.

  Attributes:
    horizon: K, env steps played after the fork.
    samples: paired samples per decision (each plays both arms).
    max_decisions: at most this many decisions are forked (the ones with the
      largest memory change first, taking turns between games); the rest get
      no counterfactual score.
    seed: base of the samples' agent seeds.
    metric: the credited outcome, "progression" | "reward" | "unlocks".
    batch: at most this many forks share one env; a smaller group gets the
      next power of two of slots, so Craftax compiles few batch shapes.
  """

  horizon: int = 8
  samples: int = 2
  max_decisions: int = 64
  seed: int = 0
  metric: str = "progression"
  batch: int = 64


@dataclasses.dataclass(frozen=True)
class Fork:
  """One arm of one sample of one decision."""

  decision: ScoredTurn
  arm: str  # "with" | "without"
  sample: int
  seed: int  # the agent's sampling-seed base (equal in both arms)
  memory: dict[str, str]
  game: str
  task: str
  episode_seed: int
  env_settings: dict[str, Any]
  prefix: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class ForkOutcome:
  fork: Fork
  steps: int
  reward: float
  progression: float  # gained in the window
  unlocks: int  # achievements/milestones unlocked in the window
  error: str | None = None


def _size(diff: Mapping[str, Any]) -> int:
  return (len(diff.get("added", {})) + len(diff.get("removed", {}))
          + sum(len(c.get("ops", ())) for c in diff.get("changed", {}).values()))


def plan_forks(candidates: Sequence[ScoredTurn], trajectories: Sequence[Trajectory],
               cfg: CounterfactualConfig) -> list[Fork]:
  """The forks of the decisions among `candidates` (turns that changed memory)."""
  trajs = by_path(list(trajectories))
  decisions = []
  for c in candidates:
    traj = trajs[c.trajectory]
    t = traj.turn(c.step, c.phase, c.turn)
    size = _size(t.memory_diff or {})
    if size and traj.header.initial_memory is not None and c.step < len(traj.steps):
      decisions.append((-size, c.key, c))
  by_game: dict[str, list] = collections.defaultdict(list)
  for d in sorted(decisions, key=lambda x: (x[0], x[1])):
    by_game[d[2].game].append(d[2])
  chosen: list[ScoredTurn] = []  # the largest changes first, taking turns between games
  for row in itertools.zip_longest(*(by_game[g] for g in sorted(by_game))):
    chosen.extend(c for c in row if c is not None)
  forks = []
  for c in chosen[: cfg.max_decisions]:
    traj = trajs[c.trajectory]
    spec = traj.replay_spec()
    before = traj.memory_before(c.step, c.phase, c.turn)
    after = traj.memory_after(c.step, c.phase, c.turn)
    for k in range(cfg.samples):
      for arm, memory in (("with", after), ("without", before)):
        forks.append(Fork(c, arm, k, cfg.seed * 1000 + k, memory, traj.header.game,
                          traj.header.task, spec["seed"], spec["env_settings"],
                          tuple(spec["actions"][: c.step])))
  return forks


def run_forks(forks: Sequence[Fork], *, client: Any, structures: Mapping[str, Any],
              agent_config: AgentConfig | Mapping[str, AgentConfig], horizon: int,
              env_factory: EnvFactory = make_env, workdir: str | None = None,
              batch: int = 64) -> list[ForkOutcome]:
  """Plays every fork for `horizon` steps; one batched env per (game, settings).

  `structures` and `agent_config`: each fork plays with those of its own episode, keyed by
  the decision's trajectory path (a structure may also be keyed by game: one for all of
  that game's forks; a single `AgentConfig` serves every fork).
  """
  return asyncio.run(arun_forks(forks, client=client, structures=structures,
                                agent_config=agent_config, horizon=horizon,
                                env_factory=env_factory, workdir=workdir, batch=batch))


def _own(fork: Fork, structures: Mapping[str, Any],
         agent_config: AgentConfig | Mapping[str, AgentConfig]) -> tuple[Any, AgentConfig]:
  """The structure and agent settings of the fork's own episode (see `run_forks`)."""
  path = fork.decision.trajectory
  structure = structures[path] if path in structures else structures[fork.game]
  config = agent_config if isinstance(agent_config, AgentConfig) else agent_config[path]
  return structure, config


def slots_for(n: int, batch: int) -> int:
  """Env slots for a group of `n` forks: the next power of two, at most `batch`."""
  return min(max(batch, 1), 1 << max(n - 1, 0).bit_length())


async def arun_forks(forks: Sequence[Fork], *, client: Any, structures: Mapping[str, Any],
                     agent_config: AgentConfig | Mapping[str, AgentConfig], horizon: int,
                     env_factory: EnvFactory = make_env, workdir: str | None = None,
                     batch: int = 64) -> list[ForkOutcome]:
  groups: dict[str, list[int]] = collections.defaultdict(list)
  for i, f in enumerate(forks):
    groups[settings_key(f.game, f.env_settings)].append(i)
  out: list[ForkOutcome | None] = [None] * len(forks)
  if workdir is None and os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
    workdir = "/dev/shm"  # fork memories are scratch: keep them off the disk
  with tempfile.TemporaryDirectory(dir=workdir, prefix="automem-forks-") as tmp:
    for g, idx in enumerate(groups.values()):
      for c in range(0, len(idx), batch):
        chunk = idx[c: c + batch]
        group = [forks[i] for i in chunk]
        try:
          done = await _run_group(group, client, structures, agent_config, horizon,
                                  env_factory, os.path.join(tmp, f"{g}-{c}"),
                                  slots_for(len(group), batch))
        except Exception as e:  # a crashed env costs its forks, not the selection
          logging.exception("counterfactual forks of %s failed", group[0].game)
          why = f"fork env failed: {type(e).__name__}: {e}"
          done = [ForkOutcome(f, 0, 0.0, 0.0, 0, why) for f in group]
        for i, o in zip(chunk, done):
          out[i] = o
  return [o for o in out if o is not None]


async def _run_group(forks: list[Fork], client: Any, structures: Mapping[str, Any],
                     agent_config: AgentConfig | Mapping[str, AgentConfig], horizon: int, env_factory: EnvFactory,
                     tmp: str, slots: int) -> list[ForkOutcome]:
  f0 = forks[0]
  env = await asyncio.to_thread(env_factory, f0.game, slots, **f0.env_settings)
  try:
    starts = await asyncio.to_thread(replay_prefixes, env, [f.episode_seed for f in forks],
                                     [f.prefix for f in forks])
    agents: list[EpisodeAgent | None] = []
    revised: dict[int, Any] = {}  # structure -> its fork version (revised once)
    base: list[tuple[float, int]] = []
    for j, (f, (obs, stats, ended)) in enumerate(zip(forks, starts)):
      base.append((stats.progression if stats else 0.0, len(stats.achievements) if stats else 0))
      if ended:
        agents.append(None)
        continue
      structure, config = _own(f, structures, agent_config)
      if id(structure) not in revised:
        revised[id(structure)] = structure.revise({"log_first_step": False},
                                                  note="counterfactual fork")
      fork_structure = revised[id(structure)]
      store = MemoryStore.from_structure(os.path.join(tmp, f"fork-{j}"), structure)
      store.restore(f.memory)  # a new store starts reset: only the changed files are written
      agent = EpisodeAgent(
          episode_id=f"{f.decision.episode_id}/fork-{f.decision.step}-{f.decision.phase}-"
                     f"{f.decision.turn}-{f.arm}-{f.sample}",
          game=f.game, task=f.task, seed=f.episode_seed, structure=fork_structure, store=store,
          action_names=env.action_names, config=dataclasses.replace(config, seed=f.seed),
          action_reader=getattr(env, "action_reader", None))
      agent.start(obs)
      agents.append(agent)
    reward = [0.0] * len(forks)
    steps = [0] * len(forks)
    last = list(base)
    active = [a is not None for a in agents]
    while any(active):
      await _llm_round([a for a, on in zip(agents, active) if on and a is not None], client)
      actions: list[str | None] = [None] * env.num_envs
      for j, a in enumerate(agents):
        if active[j] and a is not None and a.phase is Phase.ACT:
          actions[j] = a.action
        elif active[j]:
          active[j] = False  # the agent failed (LLM error): the window ends here
      if not any(x is not None for x in actions):
        break
      results = await asyncio.to_thread(env.step, actions)
      for j, r in enumerate(results[: len(forks)]):
        if r is None or not active[j]:
          continue
        agents[j].on_env_step(r)
        steps[j] += 1
        reward[j] += float(r.reward)
        last[j] = (r.stats.progression, len(r.stats.achievements))
        if r.done or steps[j] >= horizon or not agents[j].live:
          active[j] = False
  finally:
    env.close()
  return [ForkOutcome(f, steps[j], reward[j], last[j][0] - base[j][0], last[j][1] - base[j][1],
                      None if agents[j] is None or agents[j].error is None else agents[j].error)
          for j, f in enumerate(forks)]


async def _llm_round(agents: list[EpisodeAgent], client: Any) -> None:
  """Asks every agent's pending requests together until each has an action (or failed)."""
  while True:
    pending = [(a, a.pending_request()) for a in agents if a.live]
    pending = [(a, r) for a, r in pending if r is not None]
    if not pending:
      return
    results = await client.generate([r.request for _, r in pending])
    for (a, _), res in zip(pending, results):
      a.on_llm_result(res)


def counterfactual_scores(outcomes: Sequence[ForkOutcome], metric: str = "progression"
                          ) -> list[ScoredTurn]:
  """Credit per decision: mean over samples of (with - without) in `metric`."""
  if metric not in ("progression", "reward", "unlocks"):
    raise ValueError(f"metric must be progression, reward or unlocks, got {metric!r}")
  arms: dict[tuple, dict[str, ForkOutcome]] = collections.defaultdict(dict)
  for o in outcomes:
    arms[(o.fork.decision.key, o.fork.sample)][o.fork.arm] = o
  diffs: dict[tuple, list[tuple[float, float, float]]] = collections.defaultdict(list)
  decision: dict[tuple, ScoredTurn] = {}
  for (key, _), pair in arms.items():
    if set(pair) != {"with", "without"} or any(o.error for o in pair.values()):
      continue
    w, wo = pair["with"], pair["without"]
    diffs[key].append((w.progression - wo.progression, w.reward - wo.reward,
                       float(w.unlocks - wo.unlocks)))
    decision[key] = w.fork.decision
  out = []
  col = {"progression": 0, "reward": 1, "unlocks": 2}[metric]
  for key, ds in diffs.items():
    mean = [sum(d[i] for d in ds) / len(ds) for i in range(3)]
    reason = (f"{len(ds)} paired sample(s): with - without = {mean[0]:+.2f} progression, "
              f"{mean[1]:+.2f} reward, {mean[2]:+.2f} unlocks")
    out.append(decision[key].rescored("counterfactual", mean[col], reason))
  return out
