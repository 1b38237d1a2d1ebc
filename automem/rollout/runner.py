"""Plays many episodes of one or more games at once, LOG/PLAN agent per episode.

Every (game, task) pair gets one batched env with `envs_per_task` slots.
The loop is lock-step: first every live agent's pending LLM request is
gathered and all of them go out in one concurrent `generate` call per
client (so the server batches them), again and again until every live
agent has committed an action; then each env batch takes one step with all
committed actions (the envs of different games step in parallel threads).
Finished slots are refilled with the next episode of their task.

Clients are started first, so a backend that is down stops the run with its
message. A failed LLM request or a crashed env ends only the affected
episodes, with the reason in their end record; the run goes on. Every env step flushes the
trajectories; a run started again on the same directory skips finished
episodes and replays unfinished ones from the start (and, unless
`keep_errored`, the ones that ended in an infrastructure error).

A server that stays unreachable past its client's retries (a request failed
with a cause in `OUTAGE_CAUSES`) stops new episodes from starting; the live
ones play on. Once none is live the runner probes the server with backoff
for up to `outage_wait_s`; if it answers the run goes on, else it raises
`RunStopped` with a one-line reason after writing the summary (nothing
played is lost; a rerun on the same directory resumes).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import tqdm
from absl import logging

from automem.agent import AgentConfig, EpisodeAgent, Phase, TrajectoryWriter
from automem.agent.trajectory import End, Header
from automem.envs import TextEnv, make_env
from automem.llm.types import LLMRequest, LLMResult
from automem.memory import MemoryStore, StructureError
from automem.rollout.metrics import EpisodeMetrics, format_summary, is_error, summarize
from automem.rollout.rundir import RunDir
from automem.utils.errors import RunStopped

# Error causes (after the client's own retries) that mean the server is unreachable or
# overloaded rather than that one request was bad.
OUTAGE_CAUSES = frozenset({"connection", "timeout", "server_error", "rate_limited"})


@dataclasses.dataclass(frozen=True)
class OutagePolicy:
  """How long a run waits for an unreachable LLM server before it stops.

  Attributes:
    wait_s: longest wait, in seconds, from the first probe (0 = stop at once).
    backoff_s: first pause between probes; doubles per probe.
    backoff_max_s: longest pause between probes.
  """

  wait_s: float = 600.0
  backoff_s: float = 2.0
  backoff_max_s: float = 60.0

  def __post_init__(self):
    if self.wait_s < 0 or self.backoff_s <= 0 or self.backoff_max_s < self.backoff_s:
      raise ValueError(f"invalid OutagePolicy {self}: need wait_s >= 0 and "
                       "0 < backoff_s <= backoff_max_s")


def default_env_factory(game: str, num_envs: int, **kwargs: Any) -> TextEnv:
  """`automem.envs.make_env` (tests wrap it to inject faults)."""
  return make_env(game, num_envs, **kwargs)


@dataclasses.dataclass(frozen=True)
class EpisodePlan:
  """One episode to play."""

  episode_id: str
  game: str
  task: str
  seed: int
  seed_set: str = ""


@dataclasses.dataclass
class GameSetup:
  """What a game is played with.

  Attributes:
    game: env registry name.
    structure: its `MemoryStructure`.
    env_kwargs: extra keyword arguments of `make_env` (step caps, ...);
      `task=` is added per task unless the task is the game's name.
    envs_per_task: env slots (concurrent episodes) per task.
  """

  game: str
  structure: Any
  env_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
  envs_per_task: int = 4

  def __post_init__(self):
    if isinstance(self.envs_per_task, bool) or not isinstance(self.envs_per_task, int) \
        or self.envs_per_task < 1:
      raise ValueError(f"GameSetup({self.game!r}).envs_per_task must be >= 1, "
                       f"got {self.envs_per_task!r}")


@dataclasses.dataclass
class _Slot:
  plan: EpisodePlan
  agent: EpisodeAgent
  writer: TrajectoryWriter


class _Group:
  """The env of one (game, task) with its slots and queue of episodes."""

  def __init__(self, setup: GameSetup, task: str, plans: Sequence[EpisodePlan],
               env_factory: Callable[..., TextEnv]):
    self.setup, self.task = setup, task
    self.queue = collections.deque(plans)
    self.env_factory = env_factory
    self.num_envs = max(1, min(setup.envs_per_task, len(plans)))
    self.env: TextEnv | None = None
    self.slots: list[_Slot | None] = [None] * self.num_envs

  def env_settings(self) -> dict[str, Any]:
    """The `make_env` keyword arguments of this group's env (recorded for replays)."""
    kwargs = dict(self.setup.env_kwargs)
    if self.task != self.setup.game:
      kwargs["task"] = self.task
    return kwargs

  def make_env(self) -> TextEnv:
    return self.env_factory(self.setup.game, self.num_envs, **self.env_settings())

  @property
  def busy(self) -> bool:
    return bool(self.queue) or any(s is not None for s in self.slots)

  def close(self) -> None:
    if self.env is not None:
      self.env.close()
      self.env = None


def plan_groups(plans: Sequence[EpisodePlan]) -> dict[tuple[str, str], list[EpisodePlan]]:
  out: dict[tuple[str, str], list[EpisodePlan]] = collections.defaultdict(list)
  for p in plans:
    out[(p.game, p.task)].append(p)
  return out


class Runner:
  """Plays `plans` into `run_dir`; see the module docstring.

  Args:
    run_dir: the run directory.
    setups: one `GameSetup` per game in `plans`.
    plans: the episodes (finished ones in `run_dir` are skipped).
    clients: role -> LLM client; "base" is required, "specialist" defaults
      to the base client (with the agent config's adapter name).
    agent_config: how agents talk to the models.
    env_factory: `make_env`-like factory (tests pass wrappers).
    progress: show a tqdm progress bar.
    header_extra: JSON facts added to every trajectory header.
    keep_errored: keep episodes that ended in an infrastructure error on
      resume (default: play them again).
    outage: how long to wait for an unreachable server before stopping.
  """

  def __init__(
      self,
      run_dir: RunDir,
      setups: Mapping[str, GameSetup],
      plans: Sequence[EpisodePlan],
      clients: Mapping[str, Any],
      agent_config: AgentConfig,
      *,
      env_factory: Callable[..., TextEnv] = default_env_factory,
      progress: bool = True,
      header_extra: Mapping[str, Any] | None = None,
      keep_errored: bool = False,
      outage: OutagePolicy | None = None,
  ):
    if "base" not in clients:
      raise ValueError("clients needs a 'base' client")
    ids = [p.episode_id for p in plans]
    if len(set(ids)) != len(ids):
      raise ValueError("episode ids must be unique")
    missing = {p.game for p in plans} - set(setups)
    if missing:
      raise ValueError(f"no GameSetup for games {sorted(missing)}")
    self.run_dir = run_dir
    self.setups = dict(setups)
    self.plans = list(plans)
    self.clients = {"specialist": clients["base"], **clients}
    self.agent_config = agent_config
    self.env_factory = env_factory
    self.progress = progress
    self.header_extra = dict(header_extra or {})
    self.keep_errored = keep_errored
    self.outage = outage or OutagePolicy()
    self._outage: tuple[str, str] | None = None  # (role, last error) while a server is down
    self._retried: set[str] = set()
    self._tb = None
    self._done_count = 0

  # --- public -----------------------------------------------------------------------------

  def run(self) -> dict[str, Any]:
    """Plays every unfinished episode, writes metrics and the summary, returns the summary."""
    return asyncio.run(self.arun())

  async def arun(self) -> dict[str, Any]:
    states = self.run_dir.states(p.episode_id for p in self.plans)
    keep = ("finished", "errored") if self.keep_errored else ("finished",)
    finished = {e for e, st in states.items() if st.status in keep}
    todo = [p for p in self.plans if p.episode_id not in finished]
    await self._start_clients()
    for e, st in states.items():
      if st.status == "errored" and e not in finished:
        self.run_dir.log_retry(e, st.error)
        self._retried.add(e)
    if finished or self._retried:
      logging.info("resuming: %d of %d episodes already finished; %d errored one(s) played "
                   "again", len(finished), len(self.plans), len(self._retried))
    groups = [_Group(self.setups[g], t, ps, self.env_factory)
              for (g, t), ps in plan_groups(todo).items()]
    bar = tqdm.tqdm(total=len(self.plans), initial=len(finished), desc="episodes",
                    disable=not self.progress, dynamic_ncols=True)
    self._bar, self._live_prog = bar, collections.defaultdict(list)
    for m in self.run_dir.episode_metrics(p.episode_id for p in self.plans):
      if not is_error(m):
        self._live_prog[m.game].append(m.progression)
    try:
      await self._loop(groups)
    except RunStopped as e:
      self._close_groups(groups)
      bar.close()
      self.write_summary(stopped=str(e))
      raise
    finally:
      self._close_groups(groups)
      bar.close()
    return self.write_summary()

  @staticmethod
  def _close_groups(groups: Sequence[_Group]) -> None:
    for g in groups:
      for i, slot in enumerate(g.slots):
        if slot is not None:
          slot.writer.close()  # unfinished: no end line, replayed on resume
          slot.agent.store.close()  # frees the memory root's lock for a resume
          g.slots[i] = None
      g.close()

  async def _start_clients(self) -> None:
    """Starts every client that has `start()` (LLMClient), so that a backend that is down
    at start-up (`LLMServerUnavailable`) stops the run with its message instead of failing
    every turn of every episode after its readiness wait."""
    for client in {id(c): c for c in self.clients.values()}.values():
      start = getattr(client, "start", None)
      if start is not None:
        await start()

  def write_summary(self, stopped: str = "") -> dict[str, Any]:
    """Writes metrics and summary.json; returns the summary.

    Episode counts: `episodes_finished` ended by play, `episodes_errored`
    ended by an infrastructure error (errored for good unless a resume plays
    them again), `episodes_retried` were played again after an error (in any
    session of this directory), `episodes_unfinished` have no end yet;
    `stopped` is the reason the run stopped early ("" when it ran through).
    """
    states = self.run_dir.states(p.episode_id for p in self.plans)
    records = [st.metrics for st in states.values() if st.metrics is not None]
    self.run_dir.write_metrics(records)
    summary = summarize(records)
    retried = self.run_dir.retried() & set(states)
    summary["episodes_planned"] = len(self.plans)
    summary["episodes_finished"] = sum(st.status == "finished" for st in states.values())
    summary["episodes_errored"] = sum(st.status == "errored" for st in states.values())
    summary["episodes_unfinished"] = sum(st.status == "unfinished" for st in states.values())
    summary["episodes_retried"] = len(retried)
    summary["episodes_retried_finished"] = sum(states[e].status == "finished" for e in retried)
    summary["stopped"] = stopped
    usage = {}
    for role, client in self.clients.items():
      u = getattr(client, "usage", None)
      if u is not None and hasattr(u, "summary"):
        usage[role] = u.summary()
    summary["llm_usage_this_session"] = usage
    self.run_dir.write_summary(summary)
    self._write_tb_summary(summary)
    logging.info("summary written to %s:\n%s", self.run_dir.path("summary.json"),
                 format_summary(summary))
    return summary

  # --- the loop ---------------------------------------------------------------------------

  async def _loop(self, groups: list[_Group]) -> None:
    while any(g.busy for g in groups):
      if self._outage is not None and not any(s is not None for g in groups for s in g.slots):
        await self._wait_for_server(sum(len(g.queue) for g in groups))
      if self._outage is None:  # no new episode while a server is down
        await asyncio.gather(*(self._fill(g) for g in groups if g.queue))
      await self._llm_rounds(groups)
      await asyncio.gather(*(self._step(g) for g in groups))
      for g in groups:
        self._collect(g)

  async def _fill(self, group: _Group) -> None:
    free = [i for i, s in enumerate(group.slots) if s is None]
    if not free:
      return
    take = [group.queue.popleft() for _ in range(min(len(free), len(group.queue)))]
    free = free[: len(take)]
    try:
      if group.env is None:
        group.env = await asyncio.to_thread(group.make_env)
      observations = await asyncio.to_thread(group.env.reset, [p.seed for p in take], free)
    except Exception as e:  # a broken env ends its episodes, not the run
      logging.exception("env reset failed for %s/%s", group.setup.game, group.task)
      reason = f"env reset failed: {type(e).__name__}: {e}"
      for plan in take:
        self._write_failed_episode(plan, reason)
      # The env goes away, so the episodes still playing on it end too (else they would
      # wait forever for a step, or be stepped on a fresh env they never saw).
      self._fail_live(group, reason)
      group.close()
      return
    for idx, plan, obs in zip(free, take, observations):
      try:
        group.slots[idx] = self._start_episode(group, plan, obs)
      except StructureError as e:  # a structure/task mismatch costs only this episode
        logging.error("%s cannot start: %s", plan.episode_id, e)
        self._write_failed_episode(plan, f"structure does not fit {plan.task}: {e}")

  def _start_episode(self, group: _Group, plan: EpisodePlan, obs: Any) -> _Slot:
    setup = group.setup
    structure = setup.structure.for_task(plan.task)  # the task's overrides applied
    store = MemoryStore.from_structure(self.run_dir.memory_dir(plan.episode_id), structure)
    store.reset()
    agent = EpisodeAgent(
        episode_id=plan.episode_id, game=plan.game, task=plan.task, seed=plan.seed,
        structure=setup.structure, store=store,
        action_names=group.env.action_names, config=self.agent_config,
        action_reader=getattr(group.env, "action_reader", None))
    # Started before the header is written: the structure's start-of-step hooks (harness
    # files) have run, so `initial_memory` is the memory the first turn sees.
    agent.start(obs)
    cfg = self.agent_config
    header = Header(
        episode_id=plan.episode_id, game=plan.game, task=plan.task, seed=plan.seed,
        seed_set=plan.seed_set, structure_version=setup.structure.version,
        structure_label=setup.structure.label, layout=cfg.layout, two_model=cfg.two_model,
        specialist_adapter=cfg.specialist_adapter, action_names=list(agent.action_names),
        initial_memory=store.snapshot(), initial_observation=obs.text,
        env_settings=_jsonable(group.env_settings()), agent_seed=cfg.seed,
        sampling={"memory": dataclasses.asdict(cfg.memory_sampling),
                  "action": dataclasses.asdict(cfg.action_sampling)},
        started_at=time.time(), extra=dict(self.header_extra))
    writer = TrajectoryWriter(self.run_dir.trajectory_path(plan.episode_id), header)
    return _Slot(plan, agent, writer)

  def _write_failed_episode(self, plan: EpisodePlan, reason: str) -> None:
    from automem.envs import EpisodeStats

    stats = EpisodeStats(game=plan.game, task=plan.task, seed=plan.seed, end_reason="error",
                         error=reason)
    metrics = EpisodeMetrics(plan.episode_id, plan.game, plan.task, plan.seed,
                             stats=stats.to_dict())
    writer = TrajectoryWriter(self.run_dir.trajectory_path(plan.episode_id), {
        "episode_id": plan.episode_id, "game": plan.game, "task": plan.task, "seed": plan.seed,
        "seed_set": plan.seed_set, **self.header_extra})
    writer.write([End(episode_id=plan.episode_id, stats=stats.to_dict(),
                      metrics=metrics.to_dict(), error=reason,
                      replay={"seed": plan.seed, "actions": []})])
    writer.close()
    self._episode_done(metrics)

  async def _llm_rounds(self, groups: list[_Group]) -> None:
    agents = [s.agent for g in groups for s in g.slots if s is not None]
    while True:
      pending = [(a, a.pending_request()) for a in agents if a.live]
      pending = [(a, r) for a, r in pending if r is not None]
      if not pending:
        return
      by_role: dict[str, list[tuple[EpisodeAgent, LLMRequest]]] = collections.defaultdict(list)
      for agent, req in pending:
        by_role[req.role].append((agent, req.request))
      roles = list(by_role)
      outs = await asyncio.gather(*(self._generate(role, [r for _, r in by_role[role]])
                                    for role in roles))
      for role, results in zip(roles, outs):
        for (agent, _), result in zip(by_role[role], results):
          if result.error is not None and result.error_cause in OUTAGE_CAUSES:
            if self._outage is None:
              logging.warning("LLM server for role %s failed past its retries (%s); no new "
                              "episodes start until it answers again", role, result.error)
            self._outage = (role, result.error)
          agent.on_llm_result(result)

  async def _wait_for_server(self, waiting: int) -> None:
    """Probes the failed role's client with backoff until it answers or `outage.wait_s` ends.

    Raises:
      RunStopped: the server did not answer in time.
    """
    assert self._outage is not None
    role, error = self._outage
    start = time.monotonic()
    delay = self.outage.backoff_s
    rng = random.Random(0)
    while True:
      left = self.outage.wait_s - (time.monotonic() - start)
      if left <= 0:
        reason = " ".join(str(error).split())[:300]
        raise RunStopped(
            f"LLM server for role {role!r} unreachable for {time.monotonic() - start:.0f} s "
            f"(last error: {reason}); {waiting} episode(s) not started; rerun with the same "
            "workdir to resume")
      await asyncio.sleep(min(left, delay * rng.uniform(0.5, 1.0)))
      delay = min(delay * 2, self.outage.backoff_max_s)
      probe = LLMRequest(messages=[{"role": "user", "content": "ping"}], max_new_tokens=1,
                         temperature=0.0, request_id="runner/probe/0")
      [result] = await self._generate(role, [probe])
      if result.error is None or result.error_cause not in OUTAGE_CAUSES:
        logging.info("LLM server for role %s answers again after %.0f s; the run goes on", role,
                     time.monotonic() - start)
        self._outage = None
        return
      error = result.error

  async def _generate(self, role: str, requests: list[LLMRequest]) -> list[LLMResult]:
    try:
      results = await self.clients[role].generate(requests)
      if len(results) != len(requests):
        raise RuntimeError(f"client returned {len(results)} results for {len(requests)} requests")
      return list(results)
    except Exception as e:  # clients should not raise; if one does, fail its turns
      logging.exception("LLM client for role %s raised", role)
      return [LLMResult.failure("engine", f"client raised: {e!r}") for _ in requests]

  async def _step(self, group: _Group) -> None:
    if group.env is None:
      return
    actions = [s.agent.action if s is not None and s.agent.phase is Phase.ACT else None
               for s in group.slots]
    if not any(a is not None for a in actions):
      return
    try:
      results = await asyncio.to_thread(group.env.step, actions)
    except Exception as e:  # the env is rebuilt; its episodes end with the error
      logging.exception("env step failed for %s/%s", group.setup.game, group.task)
      self._fail_live(group, f"env step failed: {type(e).__name__}: {e}")
      group.close()
      return
    for s, res in zip(group.slots, results):
      if s is None or res is None:
        continue
      s.agent.on_env_step(res)

  @staticmethod
  def _fail_live(group: _Group, reason: str) -> None:
    """Ends every episode playing on the group's env with `reason` (`_collect` records them)."""
    for s in group.slots:
      if s is not None:
        s.agent.fail(reason)

  def _collect(self, group: _Group) -> None:
    for i, s in enumerate(group.slots):
      if s is None:
        continue
      s.writer.write(s.agent.drain_records())
      s.writer.flush()
      if not s.agent.live:
        s.writer.close()
        s.agent.store.close()  # the end record holds the final memory; free the root's lock
        group.slots[i] = None
        self._episode_done(s.agent.metrics)

  def _episode_done(self, metrics: EpisodeMetrics) -> None:
    self._done_count += 1
    self.run_dir.append_metrics(metrics)
    if not is_error(metrics):  # as in the summary: errors are counted, not scored
      self._live_prog[metrics.game].append(metrics.progression)
    self._bar.update(1)
    self._bar.set_postfix({g: f"{sum(v) / len(v):.1f}" for g, v in self._live_prog.items()})
    tb = self._tensorboard()
    if tb is not None:
      tb.add_scalar(f"episode/{metrics.game}/{metrics.task}/progression", metrics.progression,
                    self._done_count)
      tb.add_scalar(f"episode/{metrics.game}/length", metrics.env_steps, self._done_count)
      tb.flush()
    if metrics.stats.get("end_reason") == "error":
      logging.warning("episode %s ended with an error: %s", metrics.episode_id,
                      metrics.stats.get("error"))

  def _tensorboard(self):
    if self._tb is None:
      try:
        from tensorboardX import SummaryWriter

        self._tb = SummaryWriter(self.run_dir.path("tb"))
      except Exception:  # metrics stay in JSON when TensorBoard is missing
        logging.warning("tensorboardX unavailable; no TensorBoard events")
        self._tb = False
    return self._tb or None

  def _write_tb_summary(self, summary: Mapping[str, Any]) -> None:
    tb = self._tensorboard()
    if tb is None:
      return
    for game, g in summary.get("games", {}).items():
      tb.add_scalar(f"summary/{game}/progression", g["progression_mean"], 0)
      tb.add_scalar(f"summary/{game}/llm_calls_per_step", g["llm_calls_per_step"], 0)
      tb.add_scalar(f"summary/{game}/fallback_rate", g["fallback_rate"], 0)
      for task, t in g["tasks"].items():
        tb.add_scalar(f"summary/{game}/{task}/progression", t["progression_mean"], 0)
    tb.flush()
    tb.close()
    self._tb = None


def _jsonable(kwargs: Mapping[str, Any]) -> dict[str, Any]:
  """`kwargs` with values JSON cannot hold written as their repr (they cannot be replayed)."""
  out = {}
  for k, v in kwargs.items():
    try:
      json.dumps(v)
      out[k] = v
    except TypeError:
      out[k] = repr(v)
  return out
