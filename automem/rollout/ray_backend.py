"""Evaluation over a Ray cluster: shards of episodes played by the ordinary runner on Ray workers.

The driver splits the unfinished episodes into shards (per game and task, at
most `episodes_per_shard` each) and submits one Ray task per shard. A task
builds its own LLM clients from the config (every worker talks to the shared
SGLang server or servers) and runs the in-process `Runner` on its shard,
writing into the same run directory, which every node must see (a shared
filesystem). The driver waits for every shard, then writes the metrics and
the summary over all episodes, as the in-process runner does.

Failure semantics are the runner's, spread over the cluster:

- A Ray worker or node that dies fails its task; Ray runs it again
  (`max_retries`) and the retry skips the shard's finished episodes, so a
  death costs only the episodes it was playing, which are replayed from the
  start (trajectories are flushed every env step and an episode counts as
  finished only with its end line).
- A driver started again on the same run directory shards only the episodes
  that are not finished.
- A shard that still fails after its retries (or stops because its LLM server
  stayed down past `outage.wait_s`) leaves its unfinished episodes
  unfinished: the driver writes the summary of everything else, then raises
  `RunStopped`; running it again plays them.
- Episodes that ended in an infrastructure error are played again by a
  resumed driver unless `keep_errored`, as in-process.

Each task writes `ray/<shard>.json` (node, pid, attempt, episodes) when it
starts and when it ends, so an operator sees where every shard runs. The
shards' appends to `metrics/episodes.jsonl` are progress only (lines from
different nodes may interleave on a network filesystem); the driver rewrites
it from the trajectories at the end.

An episode depends only on its seed and the model's answers, never on the
batch it shares an env with, so the results equal the in-process runner's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
from absl import logging

from automem.agent import AgentConfig
from automem.rollout.rundir import RunDir, atomic_write_json
from automem.rollout.runner import EpisodePlan, GameSetup, OutagePolicy, Runner, plan_groups
from automem.utils.errors import RunStopped


@dataclasses.dataclass(frozen=True)
class Shard:
  """The episodes one Ray task plays (all of one game and task)."""

  name: str
  plans: tuple[EpisodePlan, ...]


def make_shards(plans: Sequence[EpisodePlan], setups: Mapping[str, GameSetup],
                episodes_per_shard: int = 0) -> list[Shard]:
  """Per (game, task), consecutive runs of at most `episodes_per_shard` episodes (0: the
  game's `envs_per_task`, so one shard fills one env batch once)."""
  if episodes_per_shard < 0:
    raise ValueError(f"episodes_per_shard must be >= 0, got {episodes_per_shard}")
  shards = []
  for (game, _), group in plan_groups(plans).items():
    size = episodes_per_shard or max(1, setups[game].envs_per_task)
    for start in range(0, len(group), size):
      part = tuple(group[start:start + size])
      shards.append(Shard(f"{part[0].episode_id}+{len(part)}", part))
  return shards


class _ShardRunner(Runner):
  """The runner for one shard: the driver writes the run's metrics, summary and events."""

  def write_summary(self, stopped: str = "") -> dict[str, Any]:
    ids = [p.episode_id for p in self.plans]
    return {"episodes_finished": len(self.run_dir.finished(ids, keep_errored=False)),
            "stopped": stopped}

  def _tensorboard(self):
    return None


def _status_path(run_dir: RunDir, shard: Shard) -> str:
  os.makedirs(run_dir.path("ray"), exist_ok=True)
  return run_dir.path("ray", f"{shard.name}.json")


def play_shard(root: str, shard: Shard, setups: Mapping[str, GameSetup],
               agent_config: AgentConfig, llm: Mapping[str, Any],
               specialist_llm: Mapping[str, Any] | None,
               header_extra: Mapping[str, Any], keep_errored: bool = False,
               outage: OutagePolicy | None = None) -> dict[str, Any]:
  """Plays one shard into the run directory `root` (the body of a Ray task)."""
  from automem.llm import make_client

  run_dir = RunDir(root)
  status_path = _status_path(run_dir, shard)
  attempt = 1
  if os.path.exists(status_path):
    with open(status_path, encoding="utf-8") as f:
      attempt = int(json.load(f).get("attempt", 0)) + 1
  status = {"shard": shard.name, "episodes": [p.episode_id for p in shard.plans],
            "node": socket.gethostname(), "node_id": _node_id(), "pid": os.getpid(),
            "attempt": attempt, "started_at": time.time(), "state": "running"}
  atomic_write_json(status_path, status)

  async def run() -> dict[str, Any]:
    clients = {"base": make_client(ml_collections.ConfigDict(dict(llm)))}
    if specialist_llm is not None:
      clients["specialist"] = make_client(ml_collections.ConfigDict(dict(specialist_llm)))
    runner = _ShardRunner(run_dir, setups, shard.plans, clients, agent_config,
                          progress=False, header_extra=header_extra,
                          keep_errored=keep_errored, outage=outage)
    try:
      return await runner.arun()
    finally:
      for c in {id(c): c for c in clients.values()}.values():
        await c.close()

  out = asyncio.run(run())
  status.update(state="done", ended_at=time.time(), **out)
  atomic_write_json(status_path, status)
  return status


def _node_id() -> str:
  try:
    import ray

    return ray.get_runtime_context().get_node_id()
  except Exception:  # outside a Ray worker (play_shard called directly)
    return ""


@dataclasses.dataclass
class EvalJob:
  """One run directory's episodes for `run_jobs_on_ray` (a candidate of a Loop 1 race, ...).

  Attributes:
    run_dir: the run directory (on a filesystem every Ray node mounts at the same path).
    setups, plans, agent_config: as for `Runner`.
    llm: the base model's `llm` config as a plain dict (each worker builds its client).
    specialist_llm: a second endpoint's config for the specialist, or None.
    header_extra: JSON facts added to every trajectory header.
    keep_errored, outage: as for `Runner`.
  """

  run_dir: RunDir
  setups: Mapping[str, GameSetup]
  plans: Sequence[EpisodePlan]
  agent_config: AgentConfig
  llm: Mapping[str, Any]
  specialist_llm: Mapping[str, Any] | None = None
  header_extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  keep_errored: bool = False
  outage: OutagePolicy | None = None


def run_on_ray(run_dir: RunDir, setups: Mapping[str, GameSetup], plans: Sequence[EpisodePlan],
               agent_config: AgentConfig, *, llm: Mapping[str, Any],
               specialist_llm: Mapping[str, Any] | None = None,
               ray_config: ml_collections.ConfigDict,
               header_extra: Mapping[str, Any] | None = None, keep_errored: bool = False,
               outage: OutagePolicy | None = None) -> dict[str, Any]:
  """Plays `plans` into `run_dir` over the Ray cluster; returns the run summary (one job of
  `run_jobs_on_ray`; the arguments are `EvalJob`'s)."""
  job = EvalJob(run_dir, setups, plans, agent_config, llm, specialist_llm,
                dict(header_extra or {}), keep_errored, outage)
  return run_jobs_on_ray([job], ray_config)[0]


def run_jobs_on_ray(jobs: Sequence[EvalJob],
                    ray_config: ml_collections.ConfigDict) -> list[dict[str, Any]]:
  """Plays every job's episodes at once over the cluster `ray_config.address` (the evaluate
  config's `ray` section); returns each job's run summary, in order.

  A Loop 1 round (candidates x seeds) or a Loop 2 race submits its runs together, so all of
  their shards share the cluster. Joins the cluster unless Ray is initialised already.
  Raises `RunStopped` after writing every summary when a shard failed for good.
  """
  import ray

  own = not ray.is_initialized()
  if own:
    try:
      ray.init(address=ray_config.address or None, namespace=ray_config.namespace or None,
               log_to_driver=ray_config.log_to_driver)
    except ConnectionError as e:
      raise ConnectionError(
          f"no Ray cluster at config.ray.address={ray_config.address!r} ({e}); start one "
          "(`ray start --head`, launch/README.md) or set --config.ray.address='' for a local "
          "one in this process") from e
  try:
    return _drive(ray, list(jobs), ray_config)
  finally:
    if own:
      ray.shutdown()


def _drive(ray, jobs: list[EvalJob], ray_config: ml_collections.ConfigDict) -> list[dict]:
  task = ray.remote(play_shard).options(
      num_cpus=ray_config.num_cpus_per_shard, num_gpus=ray_config.num_gpus_per_shard,
      max_retries=ray_config.max_retries, retry_exceptions=False)
  pending, shard_counts = {}, []
  for j, job in enumerate(jobs):
    finished = job.run_dir.finished((p.episode_id for p in job.plans),
                                    keep_errored=job.keep_errored)
    todo = [p for p in job.plans if p.episode_id not in finished]
    shards = make_shards(todo, job.setups, ray_config.episodes_per_shard)
    shard_counts.append(len(shards))
    logging.info("ray: %s: %d of %d episodes to play in %d shards (%d finished before)",
                 job.run_dir.root, len(todo), len(job.plans), len(shards), len(finished))
    llm = dict(job.llm)
    specialist = None if job.specialist_llm is None else dict(job.specialist_llm)
    for s in shards:
      ref = task.remote(job.run_dir.root, s, job.setups, job.agent_config, llm, specialist,
                        dict(job.header_extra), job.keep_errored, job.outage)
      pending[ref] = (j, s)
  logging.info("ray: %d shards over %s", len(pending), ray.cluster_resources())
  failed: list[list[dict[str, str]]] = [[] for _ in jobs]
  while pending:
    done, _ = ray.wait(list(pending), num_returns=1)
    j, shard = pending.pop(done[0])
    try:
      status = ray.get(done[0])
      logging.info("ray: shard %s done on %s (attempt %d)", shard.name, status["node"],
                   status["attempt"])
    except Exception as e:  # its retries are spent; its episodes stay unfinished
      logging.error("ray: shard %s failed: %s", shard.name, e)
      cause = getattr(e, "cause", None) or e  # a RayTaskError carries the task's exception
      failed[j].append({"shard": shard.name, "error": f"{type(cause).__name__}: {cause}"})
  summaries = []
  for job, n, fails in zip(jobs, shard_counts, failed, strict=True):
    summarizer = Runner(job.run_dir, job.setups, job.plans, {"base": None}, job.agent_config,
                        progress=False)
    stopped = "; ".join(f"shard {f['shard']}: {f['error']}" for f in fails)
    summary = summarizer.write_summary(stopped=" ".join(stopped.split()))
    summary["backend"] = {"name": "ray", "shards": n, "failed_shards": fails}
    job.run_dir.write_summary(summary)
    summaries.append(summary)
  n_failed = sum(len(f) for f in failed)
  if n_failed:
    first = next(f for fs in failed for f in fs)
    raise RunStopped(f"{n_failed} Ray shard(s) failed after their retries (first: shard "
                     f"{first['shard']}: {' '.join(first['error'].split())[:300]}); their "
                     "unfinished episodes are played when the run is started again")
  return summaries
