"""The report's numbers against a plain recomputation from the trajectory files."""

from __future__ import annotations

import json
import math
import os
import re

import pytest
from scipy import stats

from automem.report import build_report, episode_behaviour, find_versions

pytestmark = pytest.mark.slow


def _raw(run_dir):
  """Every trajectory of a run, read line by line with nothing but json."""
  out = []
  tdir = os.path.join(run_dir, "trajectories")
  for name in sorted(os.listdir(tdir)):
    with open(os.path.join(tdir, name)) as f:
      out.append([json.loads(line) for line in f])
  return out


def _ci(values):
  n = len(values)
  mean = sum(values) / n
  if n < 2:
    return mean, 0.0
  sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
  return mean, stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)


def test_report_numbers_equal_a_recomputation_from_the_trajectories(pipeline_run):
  workdir, _, _, _ = pipeline_run
  with open(os.path.join(workdir, "report", "report.json")) as f:
    report = json.load(f)
  rows = {r["version"]: r for r in report["table"]["crafter"]}
  behaviour = {r["version"]: r for r in report["behaviour"]["crafter"]}
  prog = {}
  for label, run in (("v0", os.path.join(workdir, "v0")),
                     ("v1", os.path.join(workdir, "final", "v1"))):
    eps = _raw(run)
    ends = [next(r for r in e if r["type"] == "end") for e in eps]
    progs = [end["stats"]["progression"] for end in ends]
    mean, half = _ci(progs)
    assert rows[label]["n"] == len(eps) == 2
    assert rows[label]["progression_mean"] == pytest.approx(mean)
    assert rows[label]["progression_ci95"] == pytest.approx(half)
    steps = [r for e in eps for r in e if r["type"] == "step"]
    turns = [r for e in eps for r in e if r["type"] == "turn"]
    cmds = [c for t in turns for c in t["commands"]]
    b = behaviour[label]
    assert b["steps"] == len(steps)
    assert b["fallback"] == sum(s["fallback"] for s in steps)
    assert rows[label]["fallback_rate"] == pytest.approx(b["fallback"] / len(steps))
    assert b["turns"] == len(turns)
    assert b["prompt_tokens"] == sum(t["prompt_tokens"] for t in turns)
    assert b["context_tokens_per_step"] == pytest.approx(b["prompt_tokens"] / len(steps))
    searches = [c for c in cmds if c["op"] == "SEARCH" and c["ok"]]
    assert b["searches"] == len(searches)
    assert b["empty_searches"] == sum(c.get("meta", {}).get("matches") == 0 for c in searches)
    for op, n in b["ops"].items():
      assert n == sum(c["op"] == op for c in cmds), op
    prog[label] = {(e[0]["task"], e[0]["seed"]): end["stats"]["progression"]
                   for e, end in zip(eps, ends)}
  diffs = [prog["v1"][k] - prog["v0"][k] for k in sorted(prog["v0"])]
  mean, half = _ci(diffs)
  assert rows["v1"]["vs_v0_diff_mean"] == pytest.approx(mean)
  assert rows["v1"]["vs_v0_diff_ci95"] == pytest.approx(half)
  quoted = report["references"]["crafter"]
  assert quoted and all(r["quoted"] for r in quoted)


def test_report_files(pipeline_run, tmp_path):
  workdir, _, _, _ = pipeline_run
  out = str(tmp_path / "report")
  lineage = [{"candidate": 1, "gain": 2.0, "ci95": 1.0, "accepted": True},
             {"candidate": 2, "gain": -1.0, "accepted": False}]
  report = build_report(find_versions(workdir), out, lineage=lineage, ledger=[])
  assert [v["label"] for v in report["versions"]] == ["v0", "v1"]
  for name in ("progression", "memory_ops", "crafter_achievements", "lineage"):
    for ext in ("png", "svg"):
      assert os.path.getsize(os.path.join(out, "plots", f"{name}.{ext}")) > 1000
  assert "ledger" not in report["figures"]
  with open(os.path.join(out, "report.html")) as f:
    page = f.read()
  assert page.count("data:image/png;base64,") == 4  # self-contained: nothing loads from outside
  assert not re.search(r'src="http|<link[^>]*href="http|url\(\s*["\']?http|@import', page)
  assert "(quoted)" in page and "<td>v1</td>" in page and "<th>version</th>" in page
  assert any(n.startswith("events.out.tfevents") for n in os.listdir(os.path.join(out, "tb")))
  with pytest.raises(ValueError, match="no finished episodes of seed set 'train'"):
    build_report(find_versions(workdir), str(tmp_path / "r2"), seed_set="train")


def test_behaviour_counts_on_a_small_trajectory():
  def step(i, action, reward=0.0, fallback=False):
    return {"step": i, "action": action, "reward": reward, "fallback": fallback,
            "progression": 0.0}

  def turn(commands, diff=None, tokens=10):
    return {"commands": commands, "memory_diff": diff or {}, "prompt_tokens": tokens}

  append = {"op": "APPEND", "args": ["a.txt", "tree east"], "ok": True}
  traj = {
      "header": {"initial_memory": {"a.txt": ""}},
      "steps": [step(0, "Move West"), step(1, "Move East"), step(2, "Move West"),
                step(3, "Do"), step(4, "Do"), step(5, "Do", fallback=True)],
      "turns": [
          turn([append], {"changed": {"a.txt": {"unified": "", "ops": [
              ["insert", 0, 0, ["tree east\n"]]]}}}),
          turn([dict(append), {"op": "SEARCH", "args": ["a.txt", "cow"], "ok": True,
                               "meta": {"matches": 0}},
                {"op": "", "args": [], "ok": False}]),
      ],
  }
  b = episode_behaviour(traj)
  assert (b.steps, b.oscillating, b.stuck, b.fallback) == (6, 2, 1, 1)
  assert (b.writes, b.redundant_writes, b.searches, b.empty_searches) == (2, 1, 1, 1)
  assert b.failed_commands == 1 and b.ops == {"APPEND": 2, "SEARCH": 1}
  assert b.rates()["context_tokens_per_step"] == pytest.approx(20 / 6)


def test_the_loops_records_of_a_pipeline_workdir_are_found_per_game(tmp_path):
  from automem.report.build import _find_jsonl

  for loop, name, game in (("loop1", "lineage.jsonl", "minihack"),
                           ("loop2", "ledger.jsonl", "crafter")):
    os.makedirs(tmp_path / loop / game)
    (tmp_path / loop / game / name).write_text(json.dumps({"round": 0}) + "\n")
  assert _find_jsonl([str(tmp_path)], "ledger.jsonl") == [{"game": "crafter", "round": 0}]
  assert _find_jsonl([str(tmp_path)], "lineage.jsonl") == [{"game": "minihack", "round": 0}]
