"""End to end on the three real games with the tiny local model.

One short evaluation of Crafter, MiniHack and NetHack is shared by the checks of
the run directory; a killed run is resumed; a server that fails mid-run ends
only the affected episode.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib

import pytest

from automem.agent import read_trajectory, replay_memory
from automem.llm import LocalClient, default_llm_config, make_client
from automem.memory import MemoryStore, MemoryStructure
from automem.rollout.evaluate import evaluate
from automem.rollout.runner import default_env_factory
from experiments.configs.evaluate import get_config
from tests.support.llm_server import LLMTestServer

pytestmark = pytest.mark.slow


# Compact system texts keep every prompt inside one 2048-token bucket of the tiny model
# (the v0 user and follow-up templates are used as they are).
LOG_SYSTEM = ("You play {game} ({task}). Actions:\n{actions}\nMemory commands:\n{commands}\n"
              "LOG: record what matters in your files, then <|DONE|>.")
PLAN_SYSTEM = ("You play {game} ({task}). Actions:\n{actions}\nMemory commands:\n{commands}\n"
               "PLAN: read your files, then commit one action; else {fallback_action} is played.")


def small_config(arg: str):
  config = get_config(arg)
  config.progress = False
  for s in (config.agent.memory_sampling, config.agent.action_sampling):
    s.max_new_tokens = 8
  config.agent.max_prompt_chars = 3000
  for g in ("crafter", "minihack", "nethack"):
    config.game[g].envs_per_task = 2
    overrides = config.game[g].structure_overrides
    overrides.log.max_iterations = 1  # multi-turn LOG is covered by the unit tests
    overrides.log.system = LOG_SYSTEM
    overrides.plan.system = PLAN_SYSTEM
    config.game[g].env_kwargs = {} if g == "crafter" else {"num_workers": 1}
  return config


class CountingClient:
  """Wraps a client and records the size of every generate call."""

  def __init__(self, client):
    self.client = client
    self.calls: list[int] = []
    self.usage = client.usage

  async def generate(self, requests):
    self.calls.append(len(requests))
    return await self.client.generate(requests)

  async def close(self):
    await self.client.close()


def local_client(rollout_engine):
  engine, tok, params = rollout_engine
  return LocalClient(engine, tok, sampling_params_cls=params, max_batch_size=2)


@pytest.fixture(scope="module")
def three_game_run(tmp_path_factory, rollout_engine):
  workdir = str(tmp_path_factory.mktemp("eval3"))
  config = small_config("games=crafter;minihack;nethack,episodes=1,steps=2")
  config.game.crafter.episodes = 2
  client = CountingClient(local_client(rollout_engine))
  summary = evaluate(config, workdir, clients={"base": client})
  return workdir, summary, client


def trajectories(workdir):
  d = os.path.join(workdir, "trajectories")
  return {f[:-6]: read_trajectory(os.path.join(d, f)) for f in sorted(os.listdir(d))}


def test_run_directory_is_complete(three_game_run):
  workdir, summary, client = three_game_run
  for name in ("config.json", "summary.json", "metrics/episodes.jsonl"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(workdir, "tb")))
  assert summary["episodes_finished"] == summary["episodes_planned"] == 4
  assert set(summary["games"]) == {"crafter", "minihack", "nethack"}
  crafter = summary["games"]["crafter"]
  assert crafter["episodes"] == 2 and crafter["env_steps"] == 4
  assert crafter["llm_calls_per_step"] > 0 and crafter["prompt_tokens_per_step"] > 1000
  for game in ("crafter", "minihack", "nethack"):
    saved = MemoryStructure.load(os.path.join(workdir, "structures", f"{game}.json"))
    assert saved.version == 1 and saved.log.max_iterations == 1  # the config's revision
  with open(os.path.join(workdir, "metrics", "episodes.jsonl")) as f:
    assert len(f.read().splitlines()) == 4
  # All live episodes' requests went out together: the first call carried all four.
  assert client.calls[0] == 4 and max(client.calls) == 4


def test_trajectories_are_complete_and_replay(three_game_run):
  workdir, _, _ = three_game_run
  trajs = trajectories(workdir)
  assert len(trajs) == 4
  for eid, t in trajs.items():
    header, end = t["header"], t["end"]
    assert header["episode_id"] == eid and header["seed_set"] == "test"
    assert end is not None and end["stats"]["end_reason"] == "step_cap", end
    assert len(t["steps"]) == end["stats"]["length"] == 2
    assert all(s["action"] in header["action_names"] for s in t["steps"])
    for turn in t["turns"]:
      assert turn["messages"][0]["role"] == "system" and turn["messages"][-1]["role"] == "user"
      assert turn["phase"] in ("log", "plan") and turn["role"] in ("specialist", "base")
      assert turn["prompt_tokens"] > 0
    structure = MemoryStructure.load(os.path.join(workdir, "structures", f"{header['game']}.json"))
    fresh = MemoryStore.from_structure(os.path.join(workdir, "replay", eid), structure)
    assert fresh.snapshot() == header["initial_memory"]
    assert replay_memory(t, fresh, structure) == []
    # The memory files on disk are the recorded final memory.
    mem_dir = os.path.join(workdir, "memory", eid)
    on_disk = {}
    for name in os.listdir(mem_dir):
      if name.startswith("."):
        continue  # the store's own marker file, not a memory file
      with open(os.path.join(mem_dir, name), encoding="utf-8") as f:
        on_disk[name] = f.read()
    assert on_disk == end["final_memory"]


class KillAfter:
  """An env factory whose envs raise KeyboardInterrupt at the n-th step of the run."""

  def __init__(self, n: int):
    self.n = n
    self.steps = 0

  def __call__(self, game, num_envs, **kwargs):
    env = default_env_factory(game, num_envs, **kwargs)
    outer, step = self, env.step

    def killing_step(actions):
      outer.steps += 1
      if outer.steps >= outer.n:
        raise KeyboardInterrupt("killed by the test")
      return step(actions)

    env.step = killing_step
    return env


def test_resume_after_a_kill(tmp_path, rollout_engine):
  workdir = str(tmp_path / "run")
  # Crafter's first step is one PLAN turn: three one-step episodes on two slots.
  config = small_config("games=crafter,episodes=3,steps=1")
  with pytest.raises(KeyboardInterrupt):
    evaluate(config, workdir, env_factory=KillAfter(2), clients={"base": local_client(rollout_engine)})
  tdir = os.path.join(workdir, "trajectories")
  finished = {f for f in os.listdir(tdir) if read_trajectory(os.path.join(tdir, f))["end"]}
  unfinished = set(os.listdir(tdir)) - finished
  assert len(finished) == 2 and len(unfinished) == 1
  kept = {f: pathlib.Path(tdir, f).read_bytes() for f in finished}
  # A kill -9 can leave half a line at the end of a trajectory.
  with open(os.path.join(tdir, next(iter(unfinished))), "a") as f:
    f.write('{"type": "turn", "episode_id": "cut')

  summary = evaluate(config, workdir, clients={"base": local_client(rollout_engine)})
  assert summary["episodes_finished"] == 3
  for f, data in kept.items():
    assert pathlib.Path(tdir, f).read_bytes() == data  # not replayed
  t = read_trajectory(os.path.join(tdir, next(iter(unfinished))))
  assert t["end"]["stats"]["end_reason"] == "step_cap" and len(t["steps"]) == 1
  with open(os.path.join(workdir, "metrics", "episodes.jsonl")) as f:
    assert len(f.read().splitlines()) == 3


def test_resume_refuses_a_different_structure(tmp_path, rollout_engine):
  workdir = str(tmp_path / "run")
  os.makedirs(os.path.join(workdir, "structures"))
  with open(os.path.join(workdir, "structures", "crafter.json"), "w") as f:
    json.dump({"game": "crafter", "version": 9}, f)
  with pytest.raises(ValueError, match="different crafter structure"):
    evaluate(small_config("games=crafter,episodes=1,steps=1"), workdir,
             clients={"base": local_client(rollout_engine)})


class FailMidRun:
  """An env factory that makes the server fail the next request after the first env step."""

  def __init__(self, server):
    self.server = server
    self.steps = 0

  def __call__(self, game, num_envs, **kwargs):
    env = default_env_factory(game, num_envs, **kwargs)
    outer, step = self, env.step

    def step_then_fail(actions):
      out = step(actions)
      outer.steps += 1
      if outer.steps == 1:
        outer.server.inject("http_500", times=1)
      return out

    env.step = step_then_fail
    return env


def test_server_error_mid_run_ends_only_that_episode(tmp_path, rollout_engine):
  engine, tok, params = rollout_engine
  with LLMTestServer(engine, tok, params, max_batch_size=2) as server:
    llm = default_llm_config("sglang")
    llm.base_url = server.url
    llm.max_retries = 0  # the 500 is final
    llm.sglang.wait_ready_s = 10.0
    config = small_config("games=crafter,episodes=3,steps=2,backend=sglang")
    config.game.crafter.envs_per_task = 3
    config.llm = llm
    client = make_client(llm, tokenizer=tok)
    try:
      summary = evaluate(config, str(tmp_path / "run"), env_factory=FailMidRun(server),
                         clients={"base": client})
    finally:
      asyncio.run(client.close())
  crafter = summary["games"]["crafter"]
  assert crafter["end_reasons"] == {"error": 1, "step_cap": 2}, crafter["end_reasons"]
  # The server's prefix cache served most prompt tokens (the layout keeps prefixes stable).
  assert crafter["cached_fraction"] > 0.5, crafter["cached_fraction"]
  trajs = trajectories(str(tmp_path / "run"))
  failed = [t for t in trajs.values() if t["end"]["stats"]["end_reason"] == "error"]
  assert "server_error" in failed[0]["end"]["error"]
  assert failed[0]["turns"][-1]["error"] is not None
  assert len(failed[0]["steps"]) == 1  # it ended after its first step, the others went on
