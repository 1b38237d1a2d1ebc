"""The runner with scripted clients on the real Crafter env: routing, crashes, records."""

from __future__ import annotations

import dataclasses
import socket

import pytest

from automem.agent import AgentConfig, read_trajectory
from automem.llm import LLMResult
from automem.memory import load_structure
from automem.rollout import EpisodePlan, GameSetup, RunDir, Runner
from automem.rollout.evaluate import evaluate
from automem.rollout.runner import default_env_factory
from experiments.configs.evaluate import get_config


class ScriptedClient:
  """Speaks the client interface; answers LOG with an APPEND + DONE and PLAN with an ACTION."""

  def __init__(self, name):
    self.name = name
    self.requests = []
    self.calls = []

  async def generate(self, requests):
    self.calls.append(len(requests))
    out = []
    for r in requests:
      self.requests.append(r)
      phase = r.request_id.rsplit("/", 2)[1]
      if phase == "log":
        text = "<|APPEND|>actions_log.txt|moved<|END|><|DONE|>"
      else:
        text = "<|SEARCH|>map_notes.txt|tree<|END|>" if phase == "plan" else "<|ACTION|>Do<|END|>"
      out.append(LLMResult(text=text, finish_reason="stop", prompt_tokens=50,
                           completion_tokens=9, cached_tokens=40))
    return out


def plans(n, steps_game="crafter"):
  return [EpisodePlan(f"crafter-{s}", steps_game, "crafter", s, "test") for s in range(n)]


def setup(**kw):
  structure = load_structure("crafter").revise({"plan.max_iterations": 1}, note="one turn")
  return {"crafter": GameSetup("crafter", structure, {"max_steps": 2, **kw},
                               envs_per_task=2)}


def test_two_model_mode_with_a_second_endpoint(tmp_path):
  base, specialist = ScriptedClient("base"), ScriptedClient("specialist")
  runner = Runner(RunDir(tmp_path), setup(), plans(2), {"base": base, "specialist": specialist},
                  AgentConfig(two_model=True), progress=False)
  summary = runner.run()
  assert summary["episodes_finished"] == 2
  spec_phases = {r.request_id.rsplit("/", 2)[1] for r in specialist.requests}
  base_phases = {r.request_id.rsplit("/", 2)[1] for r in base.requests}
  assert spec_phases == {"log", "plan"} and base_phases == {"commit"}
  # Both episodes' requests went out together, per endpoint.
  assert specialist.calls[0] == 2 and base.calls[0] == 2
  t = read_trajectory(tmp_path / "trajectories" / "crafter-0.jsonl")
  assert [s["action"] for s in t["steps"]] == ["Do", "Do"]
  assert {turn["role"] for turn in t["turns"]} == {"specialist", "base"}
  g = summary["games"]["crafter"]
  assert g["commands"]["APPEND"] == 2 and g["cached_tokens_per_step"] > 0
  assert t["end"]["final_memory"]["actions_log.txt"] == "moved\n"


def test_a_crashing_env_ends_its_episodes_with_the_reason(tmp_path):
  def crashing(game, num_envs, **kw):
    env = default_env_factory(game, num_envs, **kw)

    def step(actions):
      raise RuntimeError("worker died")

    env.step = step
    return env

  runner = Runner(RunDir(tmp_path), setup(), plans(3), {"base": ScriptedClient("b")},
                  AgentConfig(), env_factory=crashing, progress=False)
  summary = runner.run()
  assert summary["episodes_finished"] == 0 and summary["episodes_errored"] == 3
  assert summary["games"]["crafter"]["end_reasons"] == {"error": 3}
  t = read_trajectory(tmp_path / "trajectories" / "crafter-2.jsonl")
  assert "env step failed: RuntimeError: worker died" in t["end"]["error"]


def test_bad_plans_are_refused(tmp_path):
  with pytest.raises(ValueError, match="unique"):
    Runner(RunDir(tmp_path), setup(), plans(1) * 2, {"base": ScriptedClient("b")}, AgentConfig())
  with pytest.raises(ValueError, match="no GameSetup"):
    Runner(RunDir(tmp_path), setup(), plans(1, "nethack"), {"base": ScriptedClient("b")},
           AgentConfig())


@pytest.mark.timeout(120)  # before the fix the loop spun forever on the orphaned episode
def test_a_failed_reset_also_ends_the_episodes_still_playing_on_that_env(tmp_path):
  resets = []

  def flaky(game, num_envs, **kw):
    env = default_env_factory(game, num_envs, **kw)
    real_reset, real_step = env.reset, env.step

    def reset(seeds, indices=None):
      resets.append(list(indices))
      if len(resets) == 2:
        raise RuntimeError("reset broke")
      return real_reset(seeds, indices)

    def step(actions):
      out = list(real_step(actions))
      if out[0] is not None:  # slot 0's episode ends after one step; slot 1's plays on
        out[0] = dataclasses.replace(
            out[0], done=True, stats=dataclasses.replace(out[0].stats, end_reason="goal"))
      return out

    env.reset, env.step = reset, step
    return env

  runner = Runner(RunDir(tmp_path), setup(), plans(3), {"base": ScriptedClient("b")},
                  AgentConfig(), env_factory=flaky, progress=False)
  summary = runner.run()
  # The second reset (episode 2 into slot 0) came while episode 1 was live in slot 1.
  assert resets == [[0, 1], [0]]
  assert summary["episodes_finished"] == 1 and summary["episodes_errored"] == 2
  ends = {i: read_trajectory(tmp_path / "trajectories" / f"crafter-{i}.jsonl")["end"]
          for i in range(3)}
  assert ends[0]["stats"]["end_reason"] == "goal"
  for i in (1, 2):
    assert ends[i]["stats"]["end_reason"] == "error"
    assert "env reset failed: RuntimeError: reset broke" in ends[i]["error"]
  g = summary["games"]["crafter"]
  assert g["end_reasons"] == {"error": 2, "goal": 1} and g["errors"] == 2
  # Only the episode that played counts towards progression.
  assert g["progression_ci95"] == 0.0


class RaisingClient(ScriptedClient):
  async def generate(self, requests):
    raise ConnectionError("socket closed")


def test_a_raising_client_fails_its_turns_with_an_error_cause(tmp_path):
  runner = Runner(RunDir(tmp_path), setup(), plans(1), {"base": RaisingClient("b")},
                  AgentConfig(), progress=False)
  summary = runner.run()
  assert summary["games"]["crafter"]["end_reasons"] == {"error": 1}
  t = read_trajectory(tmp_path / "trajectories" / "crafter-0.jsonl")
  # The fallback result names its cause ("engine"), as every client's failures do.
  assert "engine: client raised: ConnectionError('socket closed')" in t["end"]["error"]
  assert t["turns"][-1]["error"].startswith("engine: client raised")
  assert summary["games"]["crafter"]["failed_llm_calls"] == 1


def closed_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_a_dead_server_at_start_up_stops_the_run_with_its_message(tmp_path):
  config = get_config("games=crafter,episodes=2,steps=2,backend=sglang")
  config.progress = False
  config.llm.base_url = f"http://127.0.0.1:{closed_port()}"
  config.llm.sglang.wait_ready_s = 0.3
  with pytest.raises(RuntimeError, match=r"is not ready after 0\.3 s"):
    evaluate(config, str(tmp_path))
  # Nothing was played: no episode became an error record.
  assert not list((tmp_path / "trajectories").glob("*.jsonl"))
