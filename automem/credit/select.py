"""Decision selection on run directories: any combination of selectors, end to end.

`select_decisions(paths, out_dir, config, clients)` reads every finished
trajectory under `paths` (run dirs, `trajectories/` dirs or files; only
train-set episodes by default, judged by the seed itself), builds the
candidates, applies the configured filters and scorers, combines them and
writes `selected_turns.jsonl`,
`selection_stats.json` and the logs of the LLM-backed selectors
(`requery_log.jsonl`, `judge_calls.jsonl`) into `out_dir`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from absl import logging

from automem.agent import AgentConfig, SamplingConfig
from automem.agent.trajectory import Trajectory, read_trajectories
from automem.credit import combine as combine_lib
from automem.credit import counterfactual as cf
from automem.credit import filters as filter_lib
from automem.credit import judge, requery, usage
from automem.credit.replay import EnvFactory
from automem.credit.scored import ScoredTurn, TurnKey
from automem.envs import make_env
from automem.memory import MemoryStructure
from automem.rollout.seeds import seed_set_of
from automem.utils import InputError


@dataclasses.dataclass(frozen=True)
class SelectionConfig:
  """Which selectors run and how they combine (see `automem.credit.combine`)."""

  deterministic: filter_lib.DeterministicConfig = dataclasses.field(
      default_factory=filter_lib.DeterministicConfig)
  filters: tuple[str, ...] = ()  # any of combine.FILTERS, applied in order
  top_episode_fraction: float = 0.5
  unlock_window: int = 10
  scorers: tuple[str, ...] = ("usage",)  # any of combine.SCORERS
  combine: combine_lib.CombineConfig = dataclasses.field(
      default_factory=combine_lib.CombineConfig)
  requery: requery.RequeryConfig = dataclasses.field(
      default_factory=requery.RequeryConfig)
  counterfactual: cf.CounterfactualConfig = dataclasses.field(
      default_factory=cf.CounterfactualConfig)
  judge: judge.JudgeConfig = dataclasses.field(default_factory=judge.JudgeConfig)
  allow_test_seeds: bool = False  # selection must never see test episodes
  allow_selection_seeds: bool = False  # Loop 2 data comes from train episodes only


def agent_config_of(traj: Trajectory) -> AgentConfig:
  """The agent settings an episode was played with (for forks), from its header."""
  h = traj.header

  def sampling(d: Mapping[str, Any]) -> SamplingConfig:
    names = {f.name for f in dataclasses.fields(SamplingConfig)}
    kw = {k: v for k, v in d.items() if k in names}
    if "stop" in kw:
      kw["stop"] = tuple(kw["stop"])
    return SamplingConfig(**kw)

  return AgentConfig(layout=h.layout or "cached", two_model=h.two_model,
                     specialist_adapter=h.specialist_adapter,
                     memory_sampling=sampling(h.sampling.get("memory", {})),
                     action_sampling=sampling(h.sampling.get("action", {})), seed=h.agent_seed)


def run_dir_of(traj: Trajectory) -> str:
  """The run dir an episode was written into (`<run>/trajectories/<id>.jsonl`)."""
  return os.path.dirname(os.path.dirname(os.path.abspath(traj.path)))


def load_structures(trajectories: Sequence[Trajectory]) -> dict[str, MemoryStructure]:
  """Trajectory path -> the structure it played with: `structures/<game>.json` of its own
  run dir (none there: left out, its decisions get no fork)."""
  out: dict[str, MemoryStructure] = {}
  loaded: dict[str, MemoryStructure] = {}
  for t in trajectories:
    f = os.path.join(run_dir_of(t), "structures", f"{t.header.game}.json")
    if f not in loaded and os.path.isfile(f):
      loaded[f] = MemoryStructure.load(f)
    if f in loaded:
      out[t.path] = loaded[f]
  return out


def check_seed_sets(trajectories: Sequence[Trajectory], config: SelectionConfig) -> None:
  """Refuses episodes outside the allowed seed sets, judged by the seed itself
  (`automem.rollout.seeds`) as well as the header's `seed_set`: train only, unless
  `allow_selection_seeds` / `allow_test_seeds`."""
  allowed = {"train"} | ({"selection"} if config.allow_selection_seeds else set()) | (
      {"test"} if config.allow_test_seeds else set())
  bad = []
  for t in trajectories:
    try:
      actual = seed_set_of(int(t.header.seed))
    except ValueError:
      actual = "no named"
    named = {actual, t.header.seed_set or actual}
    if not named <= allowed:
      said = f", its header says {t.header.seed_set!r}" if t.header.seed_set not in (
          "", actual) else ""
      bad.append((named, f"{t.episode_id} (seed {t.header.seed} of the {actual} set{said})"))
  if not bad:
    return
  test = [what for named, what in bad if "test" in named]
  if test:
    raise InputError("--runs", f"{len(test)} test-set episode(s) among the inputs (e.g. "
                     f"{test[0]}): selection must not see test seeds")
  raise InputError("--runs", f"{len(bad)} episode(s) not from the train seed set among the "
                   f"inputs (e.g. {bad[0][1]}): Loop 2 trains on train episodes only "
                   "(config.allow_selection_seeds admits selection-set ones)")


async def aselect_decisions(paths: Sequence[str], out_dir: str, config: SelectionConfig,
                            clients: Mapping[str, Any] | None = None, *,
                            env_factory: EnvFactory = make_env,
                            judge_model: str | None = None
                            ) -> tuple[list[combine_lib.SelectedTurn], dict[str, Any]]:
  """See the module docstring. `clients`: "policy" (re-query, forks), "judge"."""
  clients = dict(clients or {})
  bad = [s for s in config.filters if s not in combine_lib.FILTERS]
  bad += [s for s in config.scorers if s not in combine_lib.SCORERS]
  if bad:
    raise InputError("config.scorers/filters", f"unknown selectors {bad}; filters: "
                     f"{combine_lib.FILTERS}, scorers: {combine_lib.SCORERS}")
  for s, role in (("requery", "policy"), ("counterfactual", "policy"), ("judge", "judge")):
    if s in config.scorers and role not in clients:
      raise InputError("config.scorers", f"the {s} selector needs a {role!r} LLM client")
  try:
    trajs = read_trajectories(paths, finished_only=True)
  except FileNotFoundError as e:
    raise InputError("--runs", str(e)) from None
  if not trajs:
    raise InputError("--runs", f"no finished trajectory under {list(paths)}")
  check_seed_sets(trajs, config)
  os.makedirs(out_dir, exist_ok=True)
  candidates, det_stats = filter_lib.deterministic_candidates(trajs, config.deterministic)
  passed: dict[str, dict[TurnKey, str]] = {"deterministic": {c.key: c.reason for c in candidates}}
  for name in config.filters:
    if name == "top_episodes":
      kept = filter_lib.top_episodes(candidates, trajs, config.top_episode_fraction)
    else:
      kept = filter_lib.near_unlock(candidates, trajs, config.unlock_window)
    passed[name] = {c.key: c.reason for c in kept}
    candidates = [c for c in candidates if c.key in passed[name]]
  logging.info("selection: %d episodes, %d candidate turns after filters", len(trajs),
               len(candidates))
  scored: dict[str, list[ScoredTurn]] = {}
  extra: dict[str, Any] = {"deterministic": det_stats}
  for name in config.scorers:
    if name == "usage":
      scored[name] = usage.usage_scores(candidates, trajs)
    elif name == "requery":
      scored[name], log = await requery.requery_scores(candidates, trajs, clients["policy"],
                                                       config.requery)
      _write_jsonl(os.path.join(out_dir, "requery_log.jsonl"), log)
      extra["requery_probes"] = len(log)
    elif name == "counterfactual":
      scored[name], n = await _counterfactual(candidates, trajs, config, clients, env_factory)
      extra["counterfactual_forks"] = n
    else:
      scored[name] = await judge.judge_scores(
          candidates, trajs, clients["judge"], config.judge,
          log_path=os.path.join(out_dir, "judge_calls.jsonl"), model=judge_model)
    logging.info("selector %s scored %d turns", name, len(scored[name]))
  selected = combine_lib.combine(candidates, passed, scored, trajs, config.combine)
  stats = combine_lib.selection_stats(selected, candidates, passed, scored, trajs, extra)
  combine_lib.write_selection(out_dir, selected, stats)
  return selected, stats


async def _counterfactual(candidates, trajs, config, clients, env_factory):
  structures = load_structures(trajs)  # each episode's own, as its agent settings
  usable = [c for c in candidates if c.trajectory in structures]
  if len(usable) < len(candidates):
    logging.warning("counterfactual: %d candidate turn(s) without a structures/<game>.json in "
                    "their run dir get no fork", len(candidates) - len(usable))
  forks = cf.plan_forks(usable, trajs, config.counterfactual)
  if not forks:
    return [], 0
  agent_configs = {t.path: agent_config_of(t) for t in trajs if t.path in structures}
  outcomes = await cf.arun_forks(forks, client=clients["policy"], structures=structures,
                                 agent_config=agent_configs,
                                 horizon=config.counterfactual.horizon,
                                 env_factory=env_factory,
                                 batch=config.counterfactual.batch)
  return cf.counterfactual_scores(outcomes, config.counterfactual.metric), len(forks)


def select_decisions(paths: Sequence[str], out_dir: str, config: SelectionConfig,
                     clients: Mapping[str, Any] | None = None, **kw: Any):
  """Synchronous `aselect_decisions`."""
  return asyncio.run(aselect_decisions(paths, out_dir, config, clients, **kw))


def _write_jsonl(path: str, rows: Sequence[Mapping[str, Any]]) -> None:
  with open(path, "w", encoding="utf-8") as f:
    for r in rows:
      f.write(json.dumps(r, ensure_ascii=False) + "\n")


def selection_config(d: Mapping[str, Any]) -> SelectionConfig:
  """A `SelectionConfig` from a plain dict (e.g. `ConfigDict.to_dict()` of the job config)."""

  def sub(cls: type, key: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    kw = {k: (tuple(v) if isinstance(v, list) else v)
          for k, v in (d.get(key) or {}).items() if k in names and v is not None}
    if cls is judge.JudgeConfig and not kw.get("rubric"):
      kw.pop("rubric", None)
    return cls(**kw)

  return SelectionConfig(
      deterministic=sub(filter_lib.DeterministicConfig, "deterministic"),
      filters=tuple(d.get("filters", ())), scorers=tuple(d.get("scorers", ("usage",))),
      top_episode_fraction=float(d.get("top_episode_fraction", 0.5)),
      unlock_window=int(d.get("unlock_window", 10)),
      combine=sub(combine_lib.CombineConfig, "combine"),
      requery=sub(requery.RequeryConfig, "requery"),
      counterfactual=sub(cf.CounterfactualConfig, "counterfactual"),
      judge=sub(judge.JudgeConfig, "judge"),
      allow_test_seeds=bool(d.get("allow_test_seeds", False)),
      allow_selection_seeds=bool(d.get("allow_selection_seeds", False)))
