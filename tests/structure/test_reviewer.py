"""The LLM reviewers over real HTTP to a 127.0.0.1 API double that scripts the model's turns.

The scripted reviewer makes real tool calls (OpenAI-compatible and Anthropic
protocols), reads the tool results, first submits an invalid revision, gets
the offending field back, then submits a valid one that the loop races and
accepts. A rerun replays the conversation from its cache: no API call again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re

import pytest

from automem.llm import default_llm_config, make_client
from automem.memory import load_structure
from automem.structure import StructureLoop, read_lineage
from automem.structure.digest import digest_run
from automem.structure.loop import ReviewContext
from automem.structure.reviewer import Budget, Reviewer, SingleShotReviewer
from automem.structure.rules import Rules
from tests.structure.conftest import loop_config
from tests.support.scripted_agent import StructureSensitiveAgent


def reviewer_client(server, api: str):
  c = default_llm_config(api)
  c.base_url, c.api_key, c.max_retries, c.timeout_s = server.url + "/v1", "k", 0, 20.0
  return make_client(c)


def _tool_results(body) -> list[str]:
  """The tool results of the last turn, in either protocol."""
  last = body["messages"][-1]
  if isinstance(last.get("content"), list):  # Anthropic: a user turn of tool_result blocks
    return [b["content"] for b in last["content"] if b.get("type") == "tool_result"]
  return [m["content"] for m in body["messages"] if m["role"] == "tool"][-2:]


def scripted_review(seen: dict):
  def read_first_episode(body):
    table = _tool_results(body)[0]
    seen["table"] = table
    episode = re.search(r"^(minihack\S*)", table, re.M).group(1)
    return {"content": "Looking at one episode.", "tool_calls": [
        {"name": "read_steps", "arguments": {"episode_id": episode, "start": 0, "end": 2,
                                             "fields": ["action", "observation"]}},
        {"name": "memory_files", "arguments": {"episode_id": episode, "step": 1}}]}

  def fix_after_error(body):
    (error,) = _tool_results(body)[-1:]
    seen["error"] = error
    assert "plan.max_iterations" in error  # the field is named
    return {"tool_calls": [{"name": "submit_revision", "arguments": {
        "analysis": "the agent never knows the route", "note": "add a route file",
        "predicted_effects": "the agent walks to the stairs",
        "changes": {"files.6": {"name": "route.txt", "description": "the way to the goal"}}}}]}

  return [
      {"content": "Overview first.", "tool_calls": [
          {"name": "episode_table", "arguments": {}},
          {"name": "field_reference", "arguments": {}}]},
      read_first_episode,
      {"tool_calls": [{"name": "submit_revision", "arguments": {
          "analysis": "too few turns", "note": "more turns", "predicted_effects": "?",
          "changes": {"plan.max_iterations": 99}}}]},
      fix_after_error,
  ]


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_scripted_reviewer_makes_tool_calls_and_its_revision_is_raced(tmp_path, reviewer_server,
                                                                      api):
  seen: dict = {}
  reviewer_server.script(*scripted_review(seen))
  config = loop_config(rounds=1, **{"race.stages": (5,), "race.confirm_seeds": 1,
                                    "final.episodes": 0})
  agent = StructureSensitiveAgent(skill=0.0)
  workdir = str(tmp_path / api)
  reviewer = Reviewer(reviewer_client(reviewer_server, api), Budget(max_tool_calls=10))
  StructureLoop(config, workdir, clients={"base": agent}, proposer=reviewer).run()
  assert reviewer_server.scripted_left == 0
  assert "minihack-MiniHack-Room-5x5-v0-" in seen["table"]
  (rec,) = read_lineage(os.path.join(workdir, "lineage.jsonl"))
  assert rec["proposer"] == "reviewer" and rec["decision"] == "accepted"
  assert rec["proposal"]["analysis"] == "the agent never knows the route"
  transcript = json.loads(pathlib.Path(rec["transcript"]).read_text())
  assert transcript["outcome"] == "submitted" and transcript["invalid"] == 1
  assert transcript["tool_calls"] == 6
  tool_msgs = [m for m in transcript["messages"] if m["role"] == "tool"]
  assert len(tool_msgs) == 6 and "observation" in tool_msgs[2]["content"]
  # Rerun the round from scratch (lineage and saved proposals gone): the reviewer's
  # conversation comes from its cache and the episodes from their run dirs.
  os.remove(os.path.join(workdir, "lineage.jsonl"))
  os.remove(os.path.join(workdir, "rounds", "r0", "proposals.json"))
  n_requests = len(reviewer_server.requests)
  loop = StructureLoop(config, workdir, clients={"base": agent},
                       proposer=Reviewer(reviewer_client(reviewer_server, api)))
  assert loop.run()["accepted"] == ["v0", "v1"]
  assert len(reviewer_server.requests) == n_requests and loop.evaluator.episodes_played == 0


def _context(tmp_path) -> ReviewContext:
  s = load_structure("minihack")
  return ReviewContext(0, "v0", s, [], digest_run([], s), [], 1, set(), Rules(), str(tmp_path),
                       {})


def test_single_shot_reviewer_uses_a_json_schema_and_retries(tmp_path, reviewer_server):
  good = {"analysis": "a", "note": "longer history", "predicted_effects": "p",
          "changes": {"history_length": 16}}
  reviewer_server.script({"content": "not json"},
                         {"content": json.dumps({**good, "changes": {"game_rules": "x"}})},
                         {"content": json.dumps(good)})
  r = SingleShotReviewer(reviewer_client(reviewer_server, "openai"), Budget(max_invalid=3))
  (p,) = r.propose(_context(tmp_path))
  assert p.changes == {"history_length": 16} and p.proposer == "single_shot"
  bodies = [b for path, b in reviewer_server.requests]
  assert all(b["response_format"]["type"] == "json_schema" for b in bodies)
  assert "not a JSON object" in bodies[1]["messages"][-1]["content"]
  assert "only wording" in bodies[2]["messages"][-1]["content"]  # the structural rule


def test_k_sessions_sample_with_distinct_seeds_and_duplicates_are_dropped(tmp_path,
                                                                          reviewer_server):
  good = {"analysis": "a", "note": "longer history", "predicted_effects": "p",
          "changes": {"history_length": 16}}
  other = {**good, "changes": {"plan.max_iterations": 3}}
  reviewer_server.script(*[{"content": json.dumps(x)} for x in (good, good, other)])
  r = SingleShotReviewer(reviewer_client(reviewer_server, "openai"), Budget(seed=5))
  ctx = dataclasses.replace(_context(tmp_path), k=3)
  assert [p.changes for p in r.propose(ctx)] == [good["changes"], other["changes"]]
  assert [b["seed"] for _, b in reviewer_server.requests] == [5, 6, 7]


@pytest.mark.parametrize("budget,requests", [(Budget(max_tool_calls=2), 3),
                                             (Budget(max_tokens=1), 2),
                                             (Budget(max_wall_s=1e-9), 1)])
def test_reviewer_budget_forces_a_submission_then_gives_up(tmp_path, reviewer_server, budget,
                                                           requests):
  reviewer_server.script(*[{"tool_calls": [{"name": "episode_table", "arguments": {}}]}] * 3)
  r = Reviewer(reviewer_client(reviewer_server, "openai"), budget)
  assert r.propose(_context(tmp_path)) == []
  bodies = [b for _, b in reviewer_server.requests]
  assert len(bodies) == requests
  assert bodies[-1]["tool_choice"] == {"type": "function",
                                       "function": {"name": "submit_revision"}}
  transcript = json.loads((tmp_path / "review0.transcript.json").read_text())
  assert transcript["outcome"] == "budget"
