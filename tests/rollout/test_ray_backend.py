"""Episodes of Crafter and MiniHack over a real two-node Ray cluster on 127.0.0.1.

Both the in-process run and the Ray run talk to one SGLang-protocol server on
127.0.0.1 (tests/support/llm_server.py) whose model is scripted: its answer
is a function of the prompt tokens (tests/support/scripted_engine.py), so
the same seeds give the same episodes whichever process plays them. During the
Ray run the worker process playing a shard's second episode is killed with
SIGKILL: Ray runs the shard again, the episode finished before the kill is
kept byte for byte, and the run ends with every episode finished exactly once
and equal to the in-process run's.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import threading
import time

import pytest

from automem.agent import AgentConfig, read_trajectory
from automem.memory import load_structure
from automem.models import SamplingParams
from automem.rollout import RunDir, episode_id
from automem.rollout.evaluate import evaluate
from automem.rollout.ray_backend import EvalJob, make_shards, run_jobs_on_ray
from automem.rollout.runner import EpisodePlan, GameSetup
from automem.utils.errors import RunStopped
from experiments.configs.evaluate import get_config
from tests.support.llm_server import LLMTestServer, free_port
from tests.support.ray_cluster import RayTestCluster
from tests.support.scripted_engine import PromptHashEngine

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
  # A short temp dir: Ray's socket paths must stay under the 107-byte AF_UNIX limit.
  import tempfile

  import ray

  temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
  cluster = RayTestCluster(temp).start()
  try:
    # One driver session for the module, so its Ray workers (and their imports and
    # compilations) are reused from test to test; the backend leaves a session it did not open.
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
  finally:
    if ray.is_initialized():
      ray.shutdown()
    cluster.close()
    assert cluster.node_pids() == []


@pytest.fixture(scope="module")
def hash_server(tiny_tokenizer):
  with LLMTestServer(PromptHashEngine(tiny_tokenizer), tiny_tokenizer, SamplingParams) as server:
    yield server


def small_config(server_url: str, backend: str, address: str = ""):
  config = get_config("games=crafter;minihack,episodes=2,steps=3,backend=sglang")
  config.progress = False
  config.backend = backend
  config.llm.base_url = server_url
  config.llm.max_retries = 1
  config.llm.sglang.wait_ready_s = 10.0
  for g in ("crafter", "minihack"):
    config.game[g].envs_per_task = 1  # a shard plays its two episodes one after the other
    config.game[g].structure_overrides = {"log": {"max_iterations": 1},
                                          "plan": {"max_iterations": 1}}
  config.game.minihack.env_kwargs = {"num_workers": 1}
  config.ray.address = address
  config.ray.episodes_per_shard = 2
  config.ray.max_retries = 2
  config.ray.log_to_driver = False
  return config


def essentials(path: str) -> dict:
  """A trajectory without wall-clock fields and server cache counts."""
  t = read_trajectory(path)
  drop = {"started_at", "latency_s", "cached_tokens", "ended_at", "wall_s"}

  def clean(x):
    if isinstance(x, dict):
      return {k: clean(v) for k, v in x.items() if k not in drop and "time" not in k}
    if isinstance(x, list):
      return [clean(v) for v in x]
    return x

  return clean({k: t[k] for k in ("header", "turns", "steps", "end")})


def run_dir_trajectories(workdir: str) -> dict[str, dict]:
  return {os.path.basename(p)[:-6]: essentials(p)
          for p in sorted(glob.glob(os.path.join(workdir, "trajectories", "*.jsonl")))}


class Killer(threading.Thread):
  """Kills (SIGKILL) the worker process of the first shard seen playing its second episode."""

  def __init__(self, workdir: str, timeout_s: float = 120.0):
    super().__init__(daemon=True)
    self.workdir, self.timeout_s = workdir, timeout_s
    self.killed: dict | None = None
    self.kept: dict[str, bytes] = {}

  def run(self):
    deadline = time.monotonic() + self.timeout_s
    while time.monotonic() < deadline and self.killed is None:
      for path in glob.glob(os.path.join(self.workdir, "ray", "*.json")):
        try:
          with open(path) as f:
            status = json.load(f)
        except (OSError, json.JSONDecodeError):
          continue
        first, second = (os.path.join(self.workdir, "trajectories", f"{e}.jsonl")
                         for e in status["episodes"])
        if status["state"] != "running" or not os.path.exists(second):
          continue
        if read_trajectory(first)["end"] and not read_trajectory(second)["end"]:
          with open(first, "rb") as f:
            self.kept = {first: f.read()}
          os.kill(status["pid"], signal.SIGKILL)
          self.killed = status
          return
      time.sleep(0.02)


def test_ray_run_survives_a_killed_worker_and_equals_the_in_process_run(
    ray_cluster, hash_server, tmp_path):
  inproc = str(tmp_path / "inprocess")
  want = evaluate(small_config(hash_server.url, "inprocess"), inproc)
  assert want["episodes_finished"] == want["episodes_planned"] == 4

  workdir = str(tmp_path / "ray")
  killer = Killer(workdir)
  killer.start()
  got = evaluate(small_config(hash_server.url, "ray", ray_cluster.address), workdir)
  killer.join(timeout=5)

  assert killer.killed is not None, "no worker was caught mid-shard"
  assert got["episodes_finished"] == got["episodes_planned"] == 4
  assert got["backend"] == {"name": "ray", "shards": 2, "failed_shards": []}
  statuses = []
  for path in glob.glob(os.path.join(workdir, "ray", "*.json")):
    with open(path) as f:
      statuses.append(json.load(f))
  assert all(s["state"] == "done" for s in statuses)
  # The two shards ran on both nodes at once; the killed one ran again.
  assert len({s["node_id"] for s in statuses} | {killer.killed["node_id"]}) == 2
  retried = next(s for s in statuses if s["shard"] == killer.killed["shard"])
  assert retried["attempt"] == killer.killed["attempt"] + 1 and retried["pid"] != killer.killed["pid"]
  # The episode finished before the kill was not played again.
  for path, data in killer.kept.items():
    with open(path, "rb") as f:
      assert f.read() == data
  # Every episode exactly once, each equal to the in-process run's.
  with open(os.path.join(workdir, "metrics", "episodes.jsonl")) as f:
    ids = [json.loads(line)["episode_id"] for line in f]
  assert sorted(ids) == sorted(set(ids)) and len(ids) == 4
  assert run_dir_trajectories(workdir) == run_dir_trajectories(inproc)
  for game in ("crafter", "minihack"):
    assert got["games"][game]["progression_mean"] == want["games"][game]["progression_mean"]
  # Resuming finds nothing to do.
  again = evaluate(small_config(hash_server.url, "ray", ray_cluster.address), workdir)
  assert again["backend"]["shards"] == 0 and again["episodes_finished"] == 4


def test_several_runs_share_the_cluster_at_once(ray_cluster, hash_server, tmp_path):
  """A Loop 1 round: two candidate structures on the same seeds, submitted together."""
  config = small_config(hash_server.url, "ray", ray_cluster.address)
  base = load_structure("crafter").revise({"log.max_iterations": 1, "plan.max_iterations": 1},
                                          note="one turn")
  candidates = {"a": base, "b": base.revise({"log.max_iterations": 2}, note="two LOG turns")}
  seed = 1_000_000
  plans = [EpisodePlan(episode_id("crafter", "crafter", seed), "crafter", "crafter", seed,
                       "selection")]
  jobs = [EvalJob(RunDir(tmp_path / name), {"crafter": GameSetup("crafter", st, {"max_steps": 1},
                                                                 envs_per_task=1)},
                  plans, AgentConfig(), dict(config.llm), header_extra={"candidate": name})
          for name, st in candidates.items()]
  summaries = run_jobs_on_ray(jobs, config.ray)
  assert candidates["a"].version != candidates["b"].version
  for name, summary in zip(candidates, summaries):
    assert summary["episodes_finished"] == 1 and summary["backend"]["shards"] == 1
    t = read_trajectory(tmp_path / name / "trajectories" / f"{plans[0].episode_id}.jsonl")
    assert t["header"]["candidate"] == name
    assert t["header"]["structure_version"] == candidates[name].version
    assert len(t["steps"]) == 1


def test_a_shard_that_fails_for_good_stops_the_run_after_the_summary(ray_cluster, tmp_path):
  config = small_config(f"http://127.0.0.1:{free_port()}", "ray", ray_cluster.address)
  config.games = "crafter"
  config.llm.sglang.wait_ready_s = 0.3  # nothing listens there: every shard fails at start-up
  with pytest.raises(RunStopped, match=r"1 Ray shard\(s\) failed .* is not ready"):
    evaluate(config, str(tmp_path))
  with open(tmp_path / "summary.json") as f:
    summary = json.load(f)
  assert summary["episodes_unfinished"] == 2 and summary["episodes_finished"] == 0
  assert "is not ready" in summary["stopped"]
  assert len(summary["backend"]["failed_shards"]) == 1


def test_shards_split_per_task_and_bad_settings_are_refused():
  plans = [EpisodePlan(f"{g}-{t}-{s}", g, t, s) for g, t in (("crafter", "crafter"),
                                                             ("minihack", "A"), ("minihack", "B"))
           for s in range(3)]
  setups = {"crafter": GameSetup("crafter", None, envs_per_task=2),
            "minihack": GameSetup("minihack", None, envs_per_task=4)}
  shards = make_shards(plans, setups)
  assert [len(s.plans) for s in shards] == [2, 1, 3, 3]
  assert all(len({(p.game, p.task) for p in s.plans}) == 1 for s in shards)
  assert [p for s in shards for p in s.plans] == plans
  assert [len(s.plans) for s in make_shards(plans, setups, 1)] == [1] * 9
  with pytest.raises(ValueError, match="episodes_per_shard"):
    make_shards(plans, setups, -1)
  config = get_config("games=crafter,episodes=1,steps=1")
  config.backend = "spark"
  with pytest.raises(ValueError, match=r"config\.backend: must be"):
    evaluate(config, "/nonexistent-should-not-be-created")
