"""Trace digests, the offline proposer, continuation/merge and the revision rules."""

from __future__ import annotations

import pytest

from automem.agent import TrajectoryWriter, read_trajectory
from automem.memory import diff_snapshots, load_structure
from automem.structure import digest_run, load_trace, memory_at, render_digest
from automem.structure.proposer import Proposal, continuation, merge, offline_proposals
from automem.structure.rules import Rules, check_revision

STRUCTURE = load_structure("crafter")


def _user(obs: str, step: int) -> str:
  return STRUCTURE.user_prompt("plan", file_index="(files)", history="", step=step, helpers="",
                               observation=obs, last_action="", last_outcome="")


def _cmd(op, args, ok=True, result="ok", meta=None):
  rec = {"op": op, "args": args, "span": [0, 1], "ok": ok, "result": result}
  return {**rec, "meta": meta} if meta else rec


def write_episode(path, seed: int) -> None:
  w = TrajectoryWriter(path, {"episode_id": f"crafter-{seed}", "game": "crafter",
                              "task": "crafter", "seed": seed, "seed_set": "train"})
  obs = ["tree north", "tree north", "tree north", "water east", "water east", "grass"]
  diff = {"added": {"notes.txt": "tree\n"}, "removed": {}, "changed": {}}
  for step, o in enumerate(obs):
    commands = []
    if step == 0:
      commands = [_cmd("APPEND", ["notes.txt", "tree"]), _cmd("APPEND", ["notes.txt", "tree"])]
    elif step == 1:
      commands = [_cmd("SEARCH", ["notes.txt", "water"], meta={"matches": 0}),
                  _cmd("READ", ["nope.txt"], ok=False, result="[READ nope.txt] no such file")]
    w.write([
        {"type": "turn", "step": step, "phase": "log", "turn": 0, "messages": [
            {"role": "user", "content": "log"}], "completion": "<|DONE|>", "commands": commands,
         "prompt_tokens": 100, "completion_tokens": 5, "memory_diff": diff if step == 0 else {}},
        {"type": "turn", "step": step, "phase": "plan", "turn": 0, "messages": [
            {"role": "user", "content": _user(o, step)}], "completion": "", "commands": [],
         "prompt_tokens": 120, "completion_tokens": 5, "memory_diff": {}},
        {"type": "step", "step": step, "action": "noop" if step < 4 else "bad",
         "fallback": step < 4, "reward": 1.0 if step == 4 else 0.0, "valid_action": step != 5,
         "feedback": "unknown action 'bad'" if step == 5 else "", "progression": 4.5 * (step >= 4),
         "achievements": ["collect_drink"] if step >= 4 else []}])
  w.write([{"type": "end", "stats": {"progression": 4.5, "end_reason": "step_cap"},
            "metrics": {}, "final_memory": {"notes.txt": "tree\n", "unread.txt": "x" * 5000}}])
  w.close()


@pytest.fixture
def traces(tmp_path):
  paths = [str(tmp_path / f"e{i}.jsonl") for i in range(3)]
  for i, p in enumerate(paths):
    write_episode(p, i)
  return [load_trace(p, STRUCTURE) for p in paths]


def test_digest(traces):
  d = digest_run(traces, STRUCTURE)
  e = d["episodes"][0]
  assert e["steps"] == 6 and e["progression"] == 4.5
  assert e["unchanged_observations"] == 3  # recovered from the PLAN prompts
  assert e["milestones"] == [{"step": 4, "milestone": "collect_drink"}]
  assert e["reward_events"] == [{"step": 4, "reward": 1.0, "action": "bad"}]
  assert (e["fallback_actions"], e["invalid_actions"]) == (4, 1)
  assert e["longest_without_progress"] == 4
  assert e["memory_ops"] == {"APPEND": 2, "READ": 1, "SEARCH": 1}
  assert e["failed_commands"] == {"READ": 1} and e["redundant_writes"] == 1
  assert e["empty_searches"] == 1
  assert "unread.txt" in e["files_never_read"] and "notes.txt" not in e["files_never_read"]
  assert e["prompt_tokens_per_step"] == 220
  kinds = {c["kind"]: c for c in d["clusters"]}
  assert kinds["fallback action"]["episodes"] == 3 and kinds["fallback action"]["count"] == 12
  assert kinds["failed READ"]["episodes"] == 3
  assert "crafter-0" in render_digest(d)
  assert memory_at(traces[0], 0, {}) == {"notes.txt": "tree\n"}


def test_memory_at_applies_the_harness_diffs(tmp_path):
  m0, m1, m2 = ({"notes.txt": ""}, {"notes.txt": "a\nb\n"}, {"notes.txt": "b\n"})
  path = str(tmp_path / "h.jsonl")
  w = TrajectoryWriter(path, {"episode_id": "h", "game": "crafter", "task": "crafter", "seed": 0,
                              "initial_memory": m0})
  w.write([{"type": "turn", "step": 0, "phase": "log", "turn": 0, "completion": "",
            "commands": [], "memory_diff": diff_snapshots(m0, m1)},
           {"type": "step", "step": 0, "action": "noop",
            "harness_diff": diff_snapshots(m1, m2)},  # retention after the step's action
           {"type": "turn", "step": 1, "phase": "plan", "turn": 0, "completion": "",
            "commands": [], "memory_diff": {}},
           {"type": "step", "step": 1, "action": "noop"},
           {"type": "end", "stats": {}, "final_memory": m2}])
  w.close()
  trace = load_trace(path)
  assert memory_at(trace, 0) == m2 == read_trajectory(path).memory_before(1, "plan", 0)
  assert memory_at(trace, -1) == m0


def test_offline_proposals_follow_the_digest_and_the_rules(traces):
  d = digest_run(traces, STRUCTURE)
  props = offline_proposals(STRUCTURE, d, 3)
  assert len(props) == 3 and len({p.key() for p in props}) == 3
  for p in props:
    child = STRUCTURE.revise(p.changes, p.note)
    assert check_revision(STRUCTURE, child) == []
  # Fallbacks in every episode -> the repetition observer; a file never read -> its tail
  # pinned into PLAN prompts (with {pinned} added to the template); unchanged observations on
  # half the steps -> the (already enabled) stagnation observer made stronger.
  assert props[0].note == "enable the repetition observer"
  assert props[1].changes["pins.0"]["file"] == "actions_log.txt"
  assert "{pinned}" in props[1].changes["plan.user"]
  assert props[2].changes == {"observers.0.params": {"min_unchanged": 1, "strong_after": 2}}
  again = offline_proposals(STRUCTURE, d, 3, tried=[p.key() for p in props])
  assert not {p.key() for p in again} & {p.key() for p in props}


def test_rules():
  wording = STRUCTURE.revise({"game_rules": "be smart"}, "reword")
  assert "only wording" in check_revision(STRUCTURE, wording)[0]
  assert check_revision(STRUCTURE, wording, Rules(require_structural=False)) == []
  notes = STRUCTURE.revise({"files.0.content": "the stairs are east", "history_length": 9},
                           "pre-written notes")
  assert "may not write notes" in check_revision(STRUCTURE, notes)[0]
  assert check_revision(STRUCTURE, notes, Rules(harness_files=("map_notes.txt",))) == []
  n = len(STRUCTURE.files)
  tips = STRUCTURE.revise({f"files.{n}": {"name": "tips.txt", "read_only": True,
                                          "content": "Always drink when thirst<5"}}, "tips")
  assert check_revision(STRUCTURE, tips)[0].startswith(f"files.{n}.content:")
  assert check_revision(STRUCTURE, tips, Rules(allow_reference_files=True)) == []
  status = STRUCTURE.revise({f"files.{n}": {"name": "status.txt", "read_only": True},
                             "harness_files.0": {"file": "status.txt", "source": "checklist"}},
                            "a checklist the harness keeps")
  assert check_revision(STRUCTURE, status)[0].startswith("harness_files.0:")
  assert check_revision(STRUCTURE, status, Rules(harness_files=("status.txt",))) == []
  ops = [o for o in STRUCTURE.log.allowed_ops if o in ("SEARCH", "READ", "DONE")]
  readonly = STRUCTURE.revise({"log.allowed_ops": ops}, "no writes")
  assert "write op" in check_revision(STRUCTURE, readonly)[0]
  assert check_revision(STRUCTURE, STRUCTURE.revise({}, "nothing")) == [
      "the revision changes nothing"]


def test_continuation_and_merge():
  failed = Proposal({"history_length": 16}, "longer history")
  up = continuation(STRUCTURE, failed, {"a": 2.0, "b": 1.0})
  assert up.changes == {"history_length": 24} and up.proposer == "continuation"
  down = continuation(STRUCTURE, failed, {"a": -2.0})
  assert down.changes == {"history_length": 12}
  assert continuation(STRUCTURE, Proposal({"log_first_step": True}, "x"), {"a": 1.0}) is None
  # A candidate that added a list item (a pin, an observer): nothing numeric to push further.
  added = f"pins.{len(STRUCTURE.pins)}"
  assert continuation(STRUCTURE, Proposal({added: {"file": "notes.txt", "view": "tail",
                                                   "lines": 5}}, "pin"), {"a": 1.0}) is None
  assert continuation(STRUCTURE, Proposal({f"{added}.lines": 5}, "pin"), {"a": 1.0}) is None
  a = Proposal({"history_length": 16}, "a")
  b = Proposal({"plan.max_iterations": 3}, "b")
  m = merge(STRUCTURE, a, b)
  assert m.changes == {"history_length": 16, "plan.max_iterations": 3} and m.proposer == "merge"
  assert merge(STRUCTURE, a, Proposal({"history_length": 4}, "c")) is None
  assert merge(STRUCTURE, Proposal({"plan": {"max_iterations": 2}}, "d"), b) is None


def test_an_override_glob_that_matches_no_task_is_refused():
  from automem.memory import load_structure

  evolved = load_structure("minihack", "evolved")
  assert check_revision(evolved, evolved.revise({"history_length": 7}, "shorter")) == []
  typo = evolved.revise({"task_overrides.0.match": "minihack-boxoban-*", "history_length": 7},
                        "typo")
  [problem] = check_revision(evolved, typo)
  assert problem.startswith("task_overrides[0].match: 'minihack-boxoban-*' matches no minihack")
