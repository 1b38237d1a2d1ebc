"""The runner with scripted clients on the real Crafter env: routing, crashes, records."""

from __future__ import annotations

import pytest

from automem.agent import AgentConfig, read_trajectory
from automem.llm import LLMResult
from automem.memory import load_structure
from automem.rollout import EpisodePlan, GameSetup, RunDir, Runner
from automem.rollout.runner import default_env_factory


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
  return {"crafter": GameSetup("crafter", structure, {"max_episode_steps": 2, **kw},
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
  assert summary["episodes_finished"] == 3
  assert summary["games"]["crafter"]["end_reasons"] == {"error": 3}
  t = read_trajectory(tmp_path / "trajectories" / "crafter-2.jsonl")
  assert "env step failed: RuntimeError: worker died" in t["end"]["error"]


def test_bad_plans_are_refused(tmp_path):
  with pytest.raises(ValueError, match="unique"):
    Runner(RunDir(tmp_path), setup(), plans(1) * 2, {"base": ScriptedClient("b")}, AgentConfig())
  with pytest.raises(ValueError, match="no GameSetup"):
    Runner(RunDir(tmp_path), setup(), plans(1, "nethack"), {"base": ScriptedClient("b")},
           AgentConfig())
