"""Resume semantics and outages: errored episodes retried, malformed end records replayed,
stale temp files swept, a killed server stops the run and a resume finishes it, bad input
is one line with exit status 2."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import subprocess
import sys

import pytest

from automem.agent import AgentConfig, read_trajectory
from automem.agent.trajectory import is_finished
from automem.llm import LLMResult, default_llm_config, make_client
from automem.rollout import OutagePolicy, RunDir, Runner, RunStopped, format_summary
from automem.rollout.evaluate import evaluate, validate_config
from automem.rollout.runner import default_env_factory
from automem.utils import InputError
from experiments.configs.evaluate import get_config
from tests.rollout.test_evaluate_e2e import small_config
from tests.rollout.test_runner import ScriptedClient, plans, setup
from tests.support.llm_server import LLMTestServer, free_port

ROOT = pathlib.Path(__file__).resolve().parents[2]


def crashing(game, num_envs, **kw):
  env = default_env_factory(game, num_envs, **kw)

  def step(actions):
    raise RuntimeError("worker died")

  env.step = step
  return env


def test_errored_episodes_are_retried_on_resume_unless_kept(tmp_path):
  first = Runner(RunDir(tmp_path), setup(), plans(2), {"base": ScriptedClient("b")},
                 AgentConfig(), env_factory=crashing, progress=False).run()
  assert (first["episodes_errored"], first["episodes_finished"]) == (2, 0)
  kept = Runner(RunDir(tmp_path), setup(), plans(2), {"base": ScriptedClient("b")},
                AgentConfig(), progress=False, keep_errored=True).run()
  assert (kept["episodes_errored"], kept["episodes_retried"]) == (2, 0)
  second = Runner(RunDir(tmp_path), setup(), plans(2), {"base": ScriptedClient("b")},
                  AgentConfig(), progress=False).run()
  assert second["episodes_finished"] == 2 and second["episodes_errored"] == 0
  assert second["episodes_retried"] == second["episodes_retried_finished"] == 2
  assert ("2 finished, 0 errored, 0 unfinished; 2 retried after an error (2 of them now "
          "finished)") in format_summary(second)
  assert second["games"]["crafter"]["end_reasons"] == {"step_cap": 2}
  lines = (tmp_path / "metrics" / "retried.jsonl").read_text().splitlines()
  assert [json.loads(x)["episode_id"] for x in lines] == ["crafter-0", "crafter-1"]
  assert "worker died" in json.loads(lines[0])["error"]


def test_malformed_end_records_are_replayed_and_stale_temps_swept(tmp_path):
  Runner(RunDir(tmp_path), setup(), plans(3), {"base": ScriptedClient("b")}, AgentConfig(),
         progress=False).run()
  tdir = tmp_path / "trajectories"
  good = (tdir / "crafter-2.jsonl").read_bytes()
  lines = (tdir / "crafter-0.jsonl").read_text().splitlines(keepends=True)
  end = json.loads(lines[-1])
  del end["metrics"]
  (tdir / "crafter-0.jsonl").write_text("".join(lines[:-1]) + json.dumps(end) + "\n")
  lines = (tdir / "crafter-1.jsonl").read_text().splitlines(keepends=True)
  (tdir / "crafter-1.jsonl").write_text("".join(lines[:-1]) + "garbage{\n" + lines[-1])
  for p in ("crafter-0", "crafter-1", "crafter-2"):  # JSON last lines that are not records
    for last in ("[1]", "null", '"end"'):
      probe = tmp_path / f"{p}-{len(last)}.probe"
      probe.write_text((tdir / f"{p}.jsonl").read_text().splitlines(keepends=True)[0] + last + "\n")
      assert not is_finished(probe)
      probe.unlink()
  for stale in ("config.json.tmp999999999", "metrics/episodes.jsonl.tmp999999998"):
    (tmp_path / stale).write_text("{")
  client = ScriptedClient("b")
  summary = Runner(RunDir(tmp_path), setup(), plans(3), {"base": client}, AgentConfig(),
                   progress=False).run()
  assert summary["episodes_finished"] == 3 and summary["episodes_unfinished"] == 0
  assert {r.request_id.split("/")[0] for r in client.requests} == {"crafter-0", "crafter-1"}
  assert (tdir / "crafter-2.jsonl").read_bytes() == good  # a valid episode is not replayed
  assert read_trajectory(tdir / "crafter-1.jsonl")["end"]["metrics"]["episode_id"] == "crafter-1"
  assert not list(tmp_path.glob("**/*.tmp99999999*"))


class DownFor(ScriptedClient):
  """Answers like ScriptedClient, except that calls 2..1+n fail as an unreachable server."""

  def __init__(self, n):
    super().__init__("flaky")
    self.n, self.call = n, 0

  async def generate(self, requests):
    self.call += 1
    if 2 <= self.call <= 1 + self.n:
      self.requests.extend(requests)
      return [LLMResult.failure("connection", "refused") for _ in requests]
    return await super().generate(requests)


def test_a_short_outage_pauses_new_episodes_then_the_run_goes_on(tmp_path):
  client = DownFor(3)  # the episode's second call and the first two probes fail
  structure_setup = setup()
  structure_setup["crafter"].envs_per_task = 1
  summary = Runner(RunDir(tmp_path), structure_setup, plans(3), {"base": client}, AgentConfig(),
                   progress=False, outage=OutagePolicy(wait_s=60, backoff_s=0.001,
                                                       backoff_max_s=0.002)).run()
  probes = [r for r in client.requests if r.request_id == "runner/probe/0"]
  assert len(probes) == 3  # two failed probes, then the server answered
  assert (summary["episodes_finished"], summary["episodes_errored"]) == (2, 1)
  assert not summary["stopped"]
  # No episode started while the server was down: the probes came before crafter-1's turns.
  first_probe = client.requests.index(probes[0])
  assert all(not r.request_id.startswith("crafter-1/") for r in client.requests[:first_probe])


class KillServerAfter:
  """An env factory that kills the LLM server right after the run's n-th env step."""

  def __init__(self, server, n):
    self.server, self.n, self.steps = server, n, 0

  def __call__(self, game, num_envs, **kwargs):
    env = default_env_factory(game, num_envs, **kwargs)
    outer, step = self, env.step

    def step_then_kill(actions):
      out = step(actions)
      outer.steps += 1
      if outer.steps == outer.n:
        outer.server.kill()
      return out

    env.step = step_then_kill
    return env


def test_a_killed_server_stops_the_run_and_a_resume_finishes_it(tmp_path, rollout_engine):
  engine, tok, params = rollout_engine
  workdir = str(tmp_path / "run")
  with LLMTestServer(engine, tok, params, max_batch_size=2) as server:
    llm = default_llm_config("sglang")
    llm.base_url = server.url
    llm.max_retries = 1
    llm.backoff_base_s = 0.01
    llm.sglang.wait_ready_s = 10.0
    config = small_config("games=crafter,episodes=3,steps=1,backend=sglang")
    config.game.crafter.envs_per_task = 1
    config.llm = llm
    config.outage_wait_s = 0.3

    def run(env_factory=None):
      client = make_client(llm, tokenizer=tok)
      try:
        return evaluate(config, workdir, env_factory=env_factory, clients={"base": client})
      finally:
        asyncio.run(client.close())

    with pytest.raises(RunStopped, match=r"unreachable for \d+ s .*connection.*1 episode\(s\) "
                                         r"not started; rerun"):
      run(KillServerAfter(server, 1))
    summary = json.loads(pathlib.Path(workdir, "summary.json").read_text())
    assert summary["stopped"] and summary["episodes_finished"] == 1
    assert summary["episodes_errored"] == 1 and summary["episodes_unfinished"] == 1
    tdir = pathlib.Path(workdir, "trajectories")
    assert len(list(tdir.glob("*.jsonl"))) == 2  # the third episode was never started
    played = {p.name: p.read_bytes() for p in tdir.glob("*.jsonl")
              if read_trajectory(p)["end"]["stats"]["end_reason"] != "error"}
    server.start()  # back on the same port
    summary = run()
  assert summary["episodes_finished"] == 3 and summary["episodes_errored"] == 0
  assert summary["episodes_retried"] == summary["episodes_retried_finished"] == 1
  assert not summary["stopped"]
  for name, data in played.items():
    assert (tdir / name).read_bytes() == data  # finished episodes stay byte-identical


def _entry(*args):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
  return subprocess.run([sys.executable, "-m", "experiments.evaluate", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300, check=False)


def test_entry_point_input_errors_and_a_dead_server_are_one_line(tmp_path):
  bad = _entry("--config=experiments/configs/evaluate.py:games=minihack",
               "--config.game.minihack.tasks=('MiniHack-NoSuchTask-v0',)",
               f"--workdir={tmp_path / 'a'}")
  assert bad.returncode == 2, bad.stderr[-2000:]
  assert "Traceback" not in bad.stderr and "config:" not in bad.stderr
  assert bad.stderr.strip().splitlines()[-1].startswith(
      "error: config.game.minihack.tasks: unknown minihack task 'MiniHack-NoSuchTask-v0'")
  zero = _entry("--config=experiments/configs/evaluate.py:episodes=0,games=crafter",
                f"--workdir={tmp_path / 'z'}")
  assert zero.returncode == 2 and "episodes=0: must be a whole number >= 1" in zero.stderr
  assert not (tmp_path / "z").exists()
  variant = _entry("--config=experiments/configs/evaluate.py:bogus=1", f"--workdir={tmp_path}")
  assert variant.returncode == 2 and "Traceback" not in variant.stderr
  lines = variant.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(
      "error: flag --config=experiments/configs/evaluate.py:bogus=1: ValueError: unknown config "
      "variant 'bogus'; known: adapter, backend, episodes, full, games, ")  # the list grows
  # The `full` config's uncapped prompts on the tiny offline model: refused up front.
  tiny = _entry("--config=experiments/configs/evaluate.py:full", "--config.llm.backend=local",
                f"--workdir={tmp_path / 'c'}")
  assert tiny.returncode == 2, tiny.stderr[-2000:]
  assert "Traceback" not in tiny.stderr and "config:" not in tiny.stderr
  assert tiny.stderr.strip().splitlines()[-1].startswith(
      "error: config.agent.max_prompt_chars: the tiny offline model holds 4096 tokens")
  assert not (tmp_path / "c").exists()  # nothing written for a refused run
  dead = _entry("--config=experiments/configs/evaluate.py:games=crafter,episodes=1,steps=1,"
                "backend=sglang", f"--config.llm.base_url=http://127.0.0.1:{free_port()}",
                "--config.llm.sglang.wait_ready_s=0.2", "--config.progress=False",
                f"--workdir={tmp_path / 'b'}")
  assert dead.returncode == 3, dead.stderr[-2000:]
  assert "Traceback" not in dead.stderr
  assert dead.stderr.strip().splitlines()[-1].startswith("stopped: ")


@pytest.mark.parametrize("field, value, message", [
    ("games", "crafter,chess", "config.games: names 'chess', which has no config.game.chess section"),
    ("seed_set", "dev", "config.seed_set: unknown seed set 'dev'"),
    ("episodes_per_task", 0, "config.episodes_per_task: must be a whole number >= 1"),
    ("game.crafter.episodes", 0, "config.game.crafter.episodes: must be a whole number >= 1 (or -1)"),
    ("game.crafter.max_steps", 0, "config.game.crafter.max_steps: must be a whole number >= 1"),
    ("game.crafter.envs_per_task", 0, "config.game.crafter.envs_per_task: must be"),
    ("game.crafter.tasks", ("forest",), "config.game.crafter.tasks: crafter has no tasks"),
    ("game.nethack.tasks", ("NetHackNope-v0",), "config.game.nethack.tasks: unknown nethack task"),
])
def test_bad_config_values_name_their_field(field, value, message):
  config = get_config("games=crafter;nethack")
  node = config
  *parents, leaf = field.split(".")
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
    validate_config(config)


def test_bad_structure_file_and_unwritable_workdir_name_the_culprit(tmp_path):
  config = get_config("games=crafter,episodes=1,steps=1")
  config.game.crafter.structure = str(tmp_path / "missing.json")
  with pytest.raises(InputError, match=r"config.game.crafter.structure: .*missing.json"):
    evaluate(config, str(tmp_path / "run"), clients={"base": ScriptedClient("b")})
  (tmp_path / "broken.json").write_text("{not json")
  config.game.crafter.structure = str(tmp_path / "broken.json")
  with pytest.raises(InputError, match=r"config.game.crafter.structure: .*broken.json"):
    evaluate(config, str(tmp_path / "run"), clients={"base": ScriptedClient("b")})
  config.game.crafter.structure = ""
  (tmp_path / "file").write_text("x")
  with pytest.raises(InputError, match=r"--workdir: .*file/run is not a writable directory"):
    evaluate(config, str(tmp_path / "file" / "run"), clients={"base": ScriptedClient("b")})


def test_a_task_override_glob_matching_no_task_of_the_game_is_refused_at_config_load():
  from automem.rollout.evaluate import validate_config
  from automem.utils.errors import InputError
  from experiments.configs import evaluate as evaluate_config

  config = evaluate_config.get_config("games=minihack,structure=evolved")
  validate_config(config)  # the shipped Boxoban override matches MiniHack's Boxoban tasks
  config.game.minihack.structure_overrides = {"task_overrides": [
      {"match": "MiniHack-Boxobn-*", "changes": {"fallback_action": "north"}}]}
  with pytest.raises(InputError, match=r"task_overrides\[0\]\.match.*Boxobn.*matches no minihack"):
    validate_config(config)
