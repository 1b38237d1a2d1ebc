"""Lineage fold, Pareto front and parent choice; episode scores for racing."""

from __future__ import annotations

import pytest

from automem.agent import EpisodeMetrics
from automem.structure.arms import score
from automem.structure.lineage import (
    append_lineage,
    fold,
    objectives,
    pareto_front,
    pick_parent,
    read_lineage,
)


def _rec(r, cand, decision, base="v0", version="", objs=None, **kw):
  return {"round": r, "candidate": cand, "parent": base, "base": base, "incumbent": "v0",
          "change_key": cand, "decision": decision, "version": version, "episodes": 10,
          "objectives": objs or {}, **kw}


def test_fold_and_torn_tail(tmp_path):
  path = str(tmp_path / "lineage.jsonl")
  append_lineage(path, [_rec(0, "r0c0", "rejected_test"),
                        _rec(1, "r1c0", "accepted", version="v1"),
                        _rec(2, "r2c0", "dropped", base="r1c0", continuation_of="r0c0")])
  with open(path, "a") as f:
    f.write('{"round": 3, "cand')  # a kill while appending
  s = fold(read_lineage(path))
  assert (s.incumbent, s.accepted, s.rounds_done, s.episodes) == ("r1c0", ["v0", "r1c0"], 3, 30)
  assert s.labels == {"v0": "v0", "r1c0": "v1"} and s.continued == {"r0c0"}
  assert s.tried == {"v0": {"r0c0", "r1c0"}, "r1c0": {"r2c0"}}


def test_pareto_front_and_parent():
  objs = {"v0": {"a": 0.5, "b": 0.5}, "x": {"a": 0.9, "b": 0.1}, "y": {"a": 0.4, "b": 0.4},
          "z": {"a": 0.1, "b": 0.9}}
  assert pareto_front(objs) == ["v0", "x", "z"]  # y is dominated by v0
  s = fold([_rec(0, c, "rejected_test", objs=o) for c, o in objs.items() if c != "v0"])
  s.objectives["v0"] = objs["v0"]
  assert pick_parent(s, 1, 3, 0, list(objs)) == "v0"  # not a Pareto round: the incumbent
  picks = {pick_parent(s, r, 3, seed, list(objs)) for r in (3, 6, 9) for seed in range(5)}
  assert picks <= {"v0", "x", "z"} and len(picks) > 1


def test_objectives_and_scores():
  def m(task, prog, ach=(), ret=0.0, end="step_cap", game="crafter"):
    return EpisodeMetrics("e", game, task, 1, stats={
        "progression": prog, "achievements": list(ach), "episode_return": ret,
        "end_reason": end})
  crafter = [m("crafter", 10.0, ["collect_wood"]), m("crafter", 0.0),
             m("crafter", 50.0, end="error")]
  assert objectives(crafter, "crafter") == {"collect_wood": 0.5, "progression": 5.0}
  hack = [m("A", 100.0), m("A", 0.0), m("B", 100.0)]
  assert objectives(hack, "minihack") == {"A": 50.0, "B": 100.0}
  nle = m("NetHackChallenge-v0", 1.2, ["Dlvl:1", "Xp:1", "Dlvl:2", "Xp:2", "Xp:3"], ret=40.0,
          game="nethack")
  assert score(nle, "progression") == 1.2 and score(nle, "return") == 40.0
  # deepest level 2, experience level 3, 40 points of in-game score
  assert score(nle, "dense") == pytest.approx(1.2 + 2 + 3 + 0.4)
  hack = m("MiniHack-Room-5x5-v0", 100.0, ["Dlvl:1", "Xp:1"], ret=0.99, game="minihack")
  assert score(hack, "dense") == 102.0  # no in-game score outside NetHack
  assert score(m("crafter", 9.0, ["collect_wood", "place_table"]), "dense") == 11.0
