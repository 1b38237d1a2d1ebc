"""The one trajectory schema: typed records, the reader, version-0 files, torn lines."""

from __future__ import annotations

import json

import pytest

from automem.agent import (
    SCHEMA_VERSION,
    End,
    Header,
    Step,
    TrajectoryError,
    TrajectoryWriter,
    Turn,
    read_trajectory,
    record_from_json,
)
from automem.proficiency import synthetic


def _episode(path):
  w = TrajectoryWriter(path, Header(episode_id="e", game="crafter", task="crafter", seed=3,
                                    initial_memory={"a.txt": ""},
                                    env_settings={"max_steps": 4}, extra={"run": "r1"}))
  w.write([Turn(step=0, phase="log", turn=0, completion="<|APPEND|>a.txt|x<|END|>",
                sampling_seed=11, phase_end="done",
                memory_diff={"added": {}, "removed": {},
                             "changed": {"a.txt": {"unified": "", "ops": [["insert", 0, 0,
                                                                           ["x\n"]]]}}}),
           Step(step=0, action="Noop", achievements=["collect_wood"], unlocked=["collect_wood"],
                observation="obs 1"),
           Step(step=1, action="Do", achievements=["collect_wood"], observation="obs 2")])
  w.flush()
  return w


def test_records_round_trip_and_keep_unknown_keys():
  for rec in (Header(episode_id="e", extra={"new_key": 1}),
              Turn(step=1, phase="plan", turn=2, completion="c", sampling_seed=5),
              Step(step=0, action="Do", unlocked=["a"]), End(unlock_steps={"a": 0})):
    data = rec.to_json()
    assert data["type"] == rec.TYPE and record_from_json(json.loads(json.dumps(data))) == rec
  assert Header.from_json({"type": "header", "episode_id": "e", "later": [1]}).extra == {
      "later": [1]}
  with pytest.raises(TrajectoryError, match="lacks step"):
    record_from_json({"type": "turn", "phase": "log", "turn": 0, "completion": ""})
  with pytest.raises(TrajectoryError, match="unknown record type"):
    record_from_json({"type": "bogus"})


def test_reader_types_the_file_and_skips_a_torn_last_line(tmp_path):
  path = tmp_path / "e.jsonl"
  w = _episode(path)
  with open(path, "a") as f:
    f.write('{"type": "turn", "step": 2, "pha')  # a writer killed mid-line
  t = read_trajectory(path)
  assert t.torn and not t.finished and t.schema_version == SCHEMA_VERSION
  assert t.header.extra == {"run": "r1"} and t.turns[0].sampling_seed == 11
  assert t.actions() == ["Noop", "Do"] and t.unlock_steps() == {"collect_wood": 0}
  assert t.replay_spec() == {"game": "crafter", "seed": 3, "env_settings": {"max_steps": 4},
                             "actions": ["Noop", "Do"]}
  assert t.memory_before(0, "log", 0) == {"a.txt": ""}
  assert t.memory_after(0, "log", 0) == {"a.txt": "x\n"}
  assert t["turns"][0]["phase_end"] == "done"  # the JSON view for dict-style callers
  w.close()
  # A broken line that is not the last is an error, not silently dropped.
  lines = path.read_text().splitlines(keepends=True)
  path.write_text(lines[0] + "{broken\n" + "".join(lines[1:]))
  with pytest.raises(TrajectoryError, match=":2: not JSON"):
    read_trajectory(path)


def test_writer_refuses_records_that_do_not_fit(tmp_path):
  w = TrajectoryWriter(tmp_path / "e.jsonl", {"episode_id": "e"})
  with pytest.raises(TrajectoryError):
    w.write([{"type": "step", "step": 0}])  # no action
  w.close()
  assert len(read_trajectory(tmp_path / "e.jsonl").steps) == 0


def test_version_0_files_still_read(tmp_path):
  # The pre-schema format: no schema_version, no seeds, unlocks or observations.
  path = tmp_path / "old.jsonl"
  rows = [{"type": "header", "episode_id": "old", "game": "minihack",
           "task": "MiniHack-Room-5x5-v0", "seed": 9},
          {"type": "turn", "episode_id": "old", "step": 0, "phase": "plan", "turn": 0,
           "completion": "<|ACTION|>north<|END|>", "commands": [], "action": "north"},
          {"type": "step", "episode_id": "old", "step": 0, "action": "north",
           "achievements": ["goal"], "progression": 100.0},
          {"type": "end", "stats": {"progression": 100.0}}]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  t = read_trajectory(path)
  assert t.schema_version == 0 and t.finished and t.progression == 100.0
  assert t.unlock_steps() == {"goal": 0}
  assert t.replay_spec()["env_settings"] == {"task": "MiniHack-Room-5x5-v0"}


def test_synthetic_episodes_are_written_through_the_records(tmp_path):
  paths = synthetic.write_synthetic_trajectories(str(tmp_path), num_episodes=2, steps=5)
  t = read_trajectory(paths[0])
  assert t.finished and t.schema_version == SCHEMA_VERSION and len(t.steps) == 5
  # Commands really ran: the results and the memory diffs agree with the final memory.
  assert t.memory_after(4, "plan", 0) == t.end.final_memory != t.header.initial_memory
  failed = [c for turn in t.turns for c in turn.commands if not c["ok"]]
  assert failed and all("missing.md" in c["result"] for c in failed)
