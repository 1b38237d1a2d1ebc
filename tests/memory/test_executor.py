"""execute(): op semantics, phase vocabularies, refusals that change nothing."""

from __future__ import annotations

import pytest

from automem.memory import (
    MemoryStore,
    StoreLimits,
    execute,
    format_results,
    load_structure,
    parse_commands,
)


@pytest.fixture()
def store(tmp_path):
  return MemoryStore(tmp_path, initial_files={
      "map.txt": "1,1: wall\n2,1: floor\n", "log.txt": "Step 1 'east': ok\nStep 2 'east': WALL\n",
      "rules.txt": "eat then letter\n"}, read_only=["rules.txt"])


def run(store, text, phase="log", **kw):
  return execute(store, parse_commands(text), phase=phase, **kw)


def test_one_result_per_item_in_order_with_spans(store):
  text = "<|READ|>map.txt<|END|> <|BOGUS|>x<|END|> <|DONE|>"
  res = run(store, text)
  assert [(r.op, r.ok, r.control) for r in res] == [
      ("READ", True, False), ("BOGUS", False, False), ("DONE", True, True)]
  assert [text[r.span[0]:r.span[1]] for r in res] == [
      "<|READ|>map.txt<|END|>", "<|BOGUS|>x<|END|>", "<|DONE|>"]
  rec = res[0].to_record()
  assert set(rec) == {"op", "args", "span", "ok", "result", "meta"} and rec["span"] == [0, 22]
  assert rec["meta"] == {"lines": 2, "returned": {"map.txt": [1, 2]}}
  assert set(res[2].to_record()) == {"op", "args", "span", "ok",
                                                                     "result"}
  assert "1,1: wall" in format_results(res)


def test_read_only_ops(store):
  r = run(store, "<|SEARCH|>log.txt|wall<|END|><|SEARCH|>*|WALL<|END|><|SEARCH|>map.txt|door<|END|>"
                 "<|TAIL|>log.txt|1<|END|><|COUNT|>log.txt|step<|END|><|COUNT|>map.txt<|END|>"
                 "<|LIST|>")
  assert all(x.ok for x in r), [x.text for x in r]
  assert r[0].text.endswith("Step 2 'east': WALL") and r[0].meta["matches"] == 1
  assert "log.txt: Step 2 'east': WALL" in r[1].text and "map.txt: 1,1: wall" in r[1].text
  assert r[2].meta["matches"] == 0 and "no matching lines" in r[2].text
  assert r[3].text.splitlines()[1:] == ["Step 2 'east': WALL"]
  assert "2 of 2 lines match" in r[4].text and "2 lines" in r[5].text
  assert "rules.txt" in r[6].text and "read-only" in r[6].text


def test_read_pages_through_long_files(tmp_path):
  lines = [f"line {i:03d} " + "x" * 40 for i in range(1, 101)]
  s = MemoryStore(tmp_path, limits=StoreLimits(max_read_chars=500),
                  initial_files={"big.txt": "\n".join(lines) + "\n"})
  seen, start = [], 1
  for _ in range(20):
    (r,) = run(s, f"<|READ|>big.txt|{start}<|END|>", phase="plan")
    assert r.ok and len(r.text) < 700
    page = [ln for ln in r.text.splitlines()[1:] if ln.startswith("line")]
    seen += page
    if "continue with" not in r.text:
      break
    hint = parse_commands(r.text).commands[-1]  # the continuation is itself a READ command
    assert hint.op == "READ"
    start = int(hint.args[1])
  assert seen == lines


def test_search_is_capped_and_reports_total(tmp_path):
  s = MemoryStore(tmp_path, limits=StoreLimits(max_search_results=3),
                  initial_files={"a.txt": "".join(f"hit {i}\n" for i in range(10))})
  (r,) = run(s, "<|SEARCH|>a.txt|HIT<|END|>")
  assert "10 matching line(s) (showing the last 3)" in r.text
  assert r.text.splitlines()[1:] == ["hit 7", "hit 8", "hit 9"]


def test_write_ops(store):
  r = run(store, "<|APPEND|>log.txt|Step 3 'north': found > | stairs<|END|>"
                 "<|WRITE|>plan.txt|go down\nthen eat<|END|>"
                 "<|CREATE|>monsters.txt|monsters seen<|END|>"
                 "<|EDIT|>map.txt|2,1: floor|2,1: door<|END|>"
                 "<|UPSERT|>map.txt|1,1|wall (north)<|END|>"
                 "<|UPSERT|>map.txt|3,1|floor<|END|>"
                 "<|RENAME|>plan.txt|strategy.txt<|END|>")
  assert all(x.ok and x.changed for x in r), [x.text for x in r]
  snap = store.snapshot()
  assert snap["log.txt"].endswith("Step 3 'north': found > | stairs\n")
  assert snap["map.txt"] == "1,1: wall (north)\n2,1: door\n3,1: floor\n"
  assert snap["strategy.txt"] == "go down\nthen eat\n" and "plan.txt" not in snap
  assert store.description("monsters.txt") == "monsters seen"
  (d,) = run(store, "<|DELETE|>monsters.txt<|END|>")
  assert d.ok and not store.exists("monsters.txt")


def test_upsert_removes_duplicate_keys(tmp_path):
  s = MemoryStore(tmp_path, initial_files={"map.txt": "4,2: a\n4,22: keep\n4,2: b\n"})
  (r,) = run(s, "<|UPSERT|>map.txt|4,2|c<|END|>")
  assert "updated" in r.text and s.read_text("map.txt") == "4,2: c\n4,22: keep\n"


def test_upsert_map_uses_the_structure_map_file(tmp_path):
  base = load_structure("nethack")
  s2 = base.revise({"map_file": "dungeon_map.txt",
                    "log.allowed_ops": [*base.log.allowed_ops, "UPSERT_MAP"]}, "dedup map")
  s = MemoryStore.from_structure(tmp_path, s2)
  r = execute(s, parse_commands("<|UPSERT_MAP|>42,4|stairs down<|END|>" * 2), phase="log",
              structure=s2)
  assert [x.ok for x in r] == [True, True]
  assert s.read_text("dungeon_map.txt") == "42,4: stairs down\n"


@pytest.mark.parametrize("text, message", [
    ("<|EDIT|>map.txt|nothing like this|x<|END|>", "not found"),
    ("<|EDIT|>log.txt|east|west<|END|>", "occurs 2 times"),
    ("<|WRITE|>rules.txt|x<|END|>", "read-only"),
    ("<|APPEND|>../escape.txt|x<|END|>", "invalid file name"),
    ("<|READ|>nope.txt<|END|>", "no file named"),
    ("<|TAIL|>log.txt|many<|END|>", "whole number"),
    ("<|READ|>log.txt|99<|END|>", "start_line"),
    ("<|CREATE|>map.txt<|END|>", "already exists"),
    ("<|RENAME|>map.txt|log.txt<|END|>", "exists"),
    ("<|APPEND|>log.txt|   <|END|>", "needs some text"),
    ("<|UPSERT_MAP|>1,1|x<|END|>", "no map file"),
    ("<|ACTION|>east<|END|>", "not allowed in the LOG"),
])
def test_refusals_change_nothing(store, text, message):
  before = store.snapshot()
  (r,) = run(store, text)
  assert not r.ok and message in r.text, r.text
  assert store.snapshot() == before


def test_limit_refusal_names_the_limit(tmp_path):
  s = MemoryStore(tmp_path, limits=StoreLimits(max_file_bytes=64), initial_files={"a.txt": ""})
  (r,) = run(s, "<|APPEND|>a.txt|" + "x" * 80 + "<|END|>")
  assert not r.ok and "max_file_bytes" in r.text and r.meta == {"limit": "max_file_bytes"}
  assert s.read_text("a.txt") == ""


def test_plan_phase_of_v0_is_read_only(tmp_path):
  structure = load_structure("crafter")
  s = MemoryStore.from_structure(tmp_path, structure)
  before = s.snapshot()
  text = ("<|SEARCH|>map_notes.txt|water<|END|><|APPEND|>strategy.txt|x<|END|>"
          "<|ACTION|>Move North<|END|>")
  r = execute(s, parse_commands(text), phase="plan", structure=structure)
  assert [x.ok for x in r] == [True, False, True]
  assert "not allowed in the PLAN phase" in r[1].text
  assert r[2].is_action and r[2].args == ("Move North",)
  assert s.snapshot() == before


def test_commands_per_turn_cap(store):
  r = run(store, "<|COUNT|>map.txt<|END|>" * 4 + "<|DONE|>", max_commands=2)
  assert [x.ok for x in r] == [True, True, False, False, True]
  assert "max_commands_per_turn (2)" in r[2].text


def test_reads_name_the_lines_they_returned(tmp_path):
  store = MemoryStore(str(tmp_path / "m"))
  store.reset()
  text = ("<|APPEND|>a.txt|tree north\nstone east\ntree west\ncow<|END|>"
          "<|SEARCH|>a.txt|tree<|END|><|TAIL|>a.txt|2<|END|><|READ|>a.txt|3<|END|>"
          "<|COUNT|>a.txt|stone<|END|><|SEARCH|>*|cow<|END|><|SEARCH|>a.txt|zzz<|END|>")
  res = run(store, text, phase="log")
  returned = [r.meta.get("returned") for r in res[1:]]
  assert returned == [{"a.txt": [1, 3]}, {"a.txt": [3, 4]}, {"a.txt": [3, 4]},
                      {"a.txt": [2]}, {"a.txt": [4]}, {}]
