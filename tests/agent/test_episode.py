"""The LOG/PLAN state machine, driven by hand with scripted completions (no LLM, no env)."""

from __future__ import annotations

import itertools

import pytest

from automem.agent import AgentConfig, EpisodeAgent, Phase, read_trajectory, replay_memory
from automem.envs import EpisodeStats, Observation, StepResult
from automem.llm import LLMResult
from automem.memory import MemoryStore, load_structure

ACTIONS = ("Noop", "Move West", "Move East", "Do")


def make_agent(tmp_path, structure=None, **config):
  structure = structure or load_structure("crafter")
  store = MemoryStore.from_structure(tmp_path / "mem", structure)
  agent = EpisodeAgent(episode_id="crafter-7", game="crafter", task="crafter", seed=7,
                       structure=structure, store=store, action_names=ACTIONS,
                       config=AgentConfig(**config))
  agent.start(Observation("You see:\n- tree 1 step east", {"vitals": {"health": 9}}))
  return agent


def answer(agent, text, **kw):
  req = agent.pending_request()
  assert req is not None, agent.phase
  agent.on_llm_result(LLMResult(text=text, finish_reason="stop", prompt_tokens=100,
                                completion_tokens=7, cached_tokens=60, **kw))
  return req


def env_step(agent, text="You see:\n- tree 1 step east", reward=0.0, done=False, length=1):
  stats = EpisodeStats("crafter", "crafter", 7, episode_return=reward, length=length,
                       end_reason="death" if done else "running")
  agent.on_env_step(StepResult(Observation(text, {"vitals": {"health": 2}}), reward, done, True,
                               "", stats))


def test_plan_then_log_with_results_as_next_turn(tmp_path):
  agent = make_agent(tmp_path)
  # Crafter v0 starts with PLAN (log_first_step is false).
  assert agent.phase is Phase.PLAN
  first = answer(agent, "Let me check. <|SEARCH|>map_notes.txt|tree<|END|>")
  assert first.role == "base" and first.request.adapter is None
  msgs = first.request.messages
  assert [m["role"] for m in msgs] == ["system", "user"]
  assert "tree 1 step east" in msgs[1]["content"] and "Move West" in msgs[0]["content"]
  second = answer(agent, "<|ACTION|>move west<|END|>")
  # The command results came back as the next user turn, after the completion.
  assert second.request.messages[:2] == msgs
  assert second.request.messages[2] == {"role": "assistant",
                                        "content": "Let me check. <|SEARCH|>map_notes.txt|tree<|END|>"}
  assert "RESULTS" in second.request.messages[3]["content"]
  assert agent.phase is Phase.ACT and agent.action == "Move West"
  assert agent.pending_request() is None

  env_step(agent, reward=1.0)
  assert agent.phase is Phase.LOG
  log = agent.pending_request()
  assert log.role == "specialist"
  user = log.request.messages[1]["content"]
  assert "Move West" in user and "reward 1" in user
  completion = ("<|APPEND|>map_notes.txt|tree east of start<|END|> <|DONE|> "
                "<|APPEND|>map_notes.txt|after done<|END|>")
  answer(agent, completion)
  assert agent.phase is Phase.PLAN
  assert agent.store.read_text("map_notes.txt") == "tree east of start\n"  # nothing after DONE
  plan = agent.pending_request().request.messages
  assert plan[-1]["role"] == "user" and "[DONE]" in plan[-1]["content"]
  assert "(the current observation is shown above)" in plan[-1]["content"]
  answer(agent, "<|ACTION|>Do<|END|>")
  env_step(agent, length=2)

  records = agent.drain_records()
  turns = [r for r in records if r["type"] == "turn"]
  assert [(t["step"], t["phase"], t["turn"]) for t in turns] == [
      (0, "plan", 0), (0, "plan", 1), (1, "log", 0), (1, "plan", 0)]
  assert turns[1]["action"] == "Move West" and turns[1]["reward"] == 1.0
  for t in turns:
    for c in t["commands"]:
      start, end = c["span"]
      assert t["completion"][start:end].lstrip("<|").upper().startswith(c["op"])
  log_turn = turns[2]
  assert [c["op"] for c in log_turn["commands"]] == ["APPEND", "DONE"]
  assert log_turn["memory_diff"]["changed"]["map_notes.txt"]["ops"]
  step_lines = [r for r in records if r["type"] == "step"]
  assert step_lines[1]["action"] == "Do"
  assert step_lines[:1] == [{"type": "step", "episode_id": "crafter-7", "step": 0,
                         "action": "Move West", "fallback": False, "reward": 1.0, "done": False,
                         "valid_action": True, "feedback": "", "progression": 0.0,
                         "achievements": [], "unlocked": [],
                         "observation": "You see:\n- tree 1 step east", "harness_diff": {}}]
  m = agent.metrics
  assert (m.llm_calls, m.prompt_tokens, m.cached_tokens, m.env_steps) == (4, 400, 240, 2)
  assert m.commands == {"SEARCH": 1, "ACTION": 2, "APPEND": 1, "DONE": 1}


def test_limits_unknown_action_and_fallback(tmp_path):
  structure = load_structure("crafter").revise(
      {"log.max_iterations": 2, "plan.max_iterations": 2}, note="test limits")
  agent = make_agent(tmp_path, structure)
  answer(agent, "<|ACTION|>fly away<|END|>")
  assert agent.phase is Phase.PLAN
  follow = agent.pending_request().request.messages[-1]["content"]
  assert "unknown action 'fly away'" in follow and "Move East" in follow
  answer(agent, "I am not sure.")
  assert agent.phase is Phase.ACT and agent.action == "Noop"  # the structure's fallback
  env_step(agent)
  answer(agent, "<|APPEND|>actions_log.txt|step 0 noop<|END|>")
  assert agent.phase is Phase.LOG  # no DONE yet: a second LOG turn
  answer(agent, "<|TAIL|>actions_log.txt<|END|>")
  assert agent.phase is Phase.PLAN
  assert "2 turn limit reached" in agent.pending_request().request.messages[-1]["content"]
  records = agent.drain_records()
  assert [r["fallback"] for r in records if r["type"] == "step"] == [True]
  assert agent.metrics.fallback_actions == 1
  assert agent.metrics.invalid_commands == 1


def test_plan_is_read_only(tmp_path):
  agent = make_agent(tmp_path)
  answer(agent, "<|APPEND|>strategy.txt|get wood<|END|>")
  assert agent.store.read_text("strategy.txt") == ""
  rec = agent._step_records[-1]["commands"][0]
  assert rec["ok"] is False and "not allowed in the PLAN phase" in rec["result"]
  assert agent.metrics.invalid_commands == 1


def test_two_model_mode_routes_memory_turns_to_the_specialist(tmp_path):
  agent = make_agent(tmp_path, two_model=True, specialist_adapter="memory-lora")
  consult = answer(agent, "<|SEARCH|>map_notes.txt|water<|END|>")
  assert consult.role == "specialist" and consult.request.adapter == "memory-lora"
  # The specialist's own ACTION ends the consultation; the base model commits.
  answer(agent, "<|ACTION|>Do<|END|>")
  assert agent.phase is Phase.COMMIT
  commit = answer(agent, "<|ACTION|>Move East<|END|>")
  assert commit.role == "base" and commit.request.adapter is None
  assert "commit the game action" in commit.request.messages[-1]["content"]
  assert agent.action == "Move East"
  env_step(agent)
  log = agent.pending_request()
  assert log.role == "specialist" and log.request.adapter == "memory-lora"
  turns = [r for r in agent.drain_records() if r["type"] == "turn"]
  assert [(t["subphase"], t["role"], t["action"]) for t in turns] == [
      ("plan", "specialist", None), ("plan", "specialist", None), ("commit", "base", "Move East")]


def test_failed_llm_request_ends_only_this_episode(tmp_path):
  agent = make_agent(tmp_path)
  agent.pending_request()
  agent.on_llm_result(LLMResult.failure("server_error", "HTTP 500 after 4 retries"))
  assert not agent.live and agent.pending_request() is None
  records = agent.drain_records()
  assert records[-1]["type"] == "end"
  assert records[-1]["stats"]["end_reason"] == "error"
  assert "HTTP 500" in records[-1]["error"]
  assert agent.metrics.failed_llm_calls == 1


def test_prompt_budget_cuts_a_phase_short(tmp_path):
  structure = load_structure("crafter").revise({"plan.max_iterations": 5}, note="long plan")
  agent = make_agent(tmp_path, structure, max_prompt_chars=1)
  answer(agent, "<|SEARCH|>map_notes.txt|x<|END|>")
  assert agent.phase is Phase.PLAN
  assert agent.pending_request() is None  # over budget: the fallback is taken at once
  assert agent.phase is Phase.ACT and agent.action == "Noop"


def test_prompt_budget_starts_plan_without_the_log_turns(tmp_path):
  agent = make_agent(tmp_path, max_prompt_chars=1)
  answer(agent, "<|ACTION|>Do<|END|>")
  env_step(agent, text="You see:\n- stone 2 steps west")
  answer(agent, "<|DONE|>")  # LOG ends by itself; PLAN would repeat its turns
  plan = agent.pending_request().request.messages
  assert [m["role"] for m in plan] == ["system", "user"]
  assert "stone 2 steps west" in plan[1]["content"]


def test_prefix_layout_within_and_across_steps(tmp_path):
  agent = make_agent(tmp_path)
  firsts = []
  for step in range(4):
    if agent.phase is Phase.LOG:
      req = answer(agent, f"<|APPEND|>actions_log.txt|step {step}<|END|>")
      firsts.append(req)
      nxt = answer(agent, "<|DONE|>")
      assert req.request.messages == nxt.request.messages[: len(req.request.messages)]
    else:
      firsts.append(agent.pending_request())
    plan = answer(agent, "<|ACTION|>Do<|END|>")
    if step:
      # Within a step every request extends the previous one.
      assert firsts[-1].request.messages == plan.request.messages[: len(firsts[-1].request.messages)]
    env_step(agent, text=f"observation {step}", length=step + 1)
  logs = [r.request.messages for r in firsts[1:]]
  # Across steps: the same system message, and the LOG message repeats the last one up to
  # the end of its history lines (the history is append-only within its window).
  for a, b in itertools.pairwise(logs):
    assert a[0] == b[0]
    head = a[1]["content"].split("STEP ")[0].rstrip()
    assert b[1]["content"].startswith(head)


def test_paper_layout_puts_the_observation_in_the_system_prompt(tmp_path):
  agent = make_agent(tmp_path, layout="paper")
  req = answer(agent, "<|ACTION|>Do<|END|>")
  assert "tree 1 step east" in req.request.messages[0]["content"]
  assert "tree 1 step east" not in req.request.messages[1]["content"]
  env_step(agent, text="You see:\n- water 2 steps north")
  assert "water 2 steps north" in agent.pending_request().request.messages[0]["content"]


def test_unknown_fallback_action_is_a_clear_error(tmp_path):
  structure = load_structure("crafter").revise({"fallback_action": "wait"}, note="bad")
  store = MemoryStore.from_structure(tmp_path / "m", structure)
  with pytest.raises(ValueError, match="fallback action 'wait'"):
    EpisodeAgent(episode_id="x", game="crafter", task="crafter", seed=0, structure=structure,
                 store=store, action_names=ACTIONS)


def test_episode_replays_to_the_same_memory(tmp_path):
  from automem.agent import TrajectoryWriter

  agent = make_agent(tmp_path)
  writer = TrajectoryWriter(tmp_path / "t.jsonl", {"episode_id": "crafter-7"})
  answer(agent, "<|ACTION|>Do<|END|>")
  env_step(agent)
  answer(agent, "<|CREATE|>plan.txt|my plan<|END|><|APPEND|>plan.txt|a\nb<|END|>")
  answer(agent, "<|WRITE|>strategy.txt|wood first<|END|><|APPEND|>bad/../x|y<|END|><|DONE|>")
  answer(agent, "<|ACTION|>Noop<|END|>")
  env_step(agent, done=True, length=2)
  writer.write(agent.drain_records())
  writer.close()
  traj = read_trajectory(tmp_path / "t.jsonl")
  assert traj["end"]["stats"]["end_reason"] == "death"
  fresh = MemoryStore.from_structure(tmp_path / "replay", agent.structure)
  assert replay_memory(traj, fresh, agent.structure) == []
  assert fresh.snapshot() == agent.store.snapshot()
  assert fresh.read_text("plan.txt") == "a\nb\n"
