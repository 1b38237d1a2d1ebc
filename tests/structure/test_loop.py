"""Loop 1 end to end on real MiniHack episodes with a structure-sensitive scripted agent."""

from __future__ import annotations

import json
import os
import pathlib
import re

import pytest

from automem.agent import is_finished, iter_records
from automem.rollout import seed_set_of
from automem.structure import StructureLoop, read_lineage
from automem.structure.arms import SeedDisciplineError
from automem.structure.lineage import append_lineage, fold
from automem.structure.proposer import Proposal
from tests.structure.conftest import PlantedProposer, add_file, loop_config


def _headers(root: str) -> list[dict]:
  out = []
  for dirpath, _, files in os.walk(root):
    out += [next(iter_records(os.path.join(dirpath, f))) for f in files
            if f.endswith(".jsonl") and os.path.basename(dirpath) == "trajectories"]
  return out


def test_planted_better_accepted_worse_rejected_and_test_seeds_only_at_the_end(tmp_path, agent):
  workdir = str(tmp_path / "loop")
  summary = StructureLoop(loop_config(), workdir, clients={"base": agent},
                          proposer=PlantedProposer()).run()
  first, second = read_lineage(os.path.join(workdir, "lineage.jsonl"))
  assert (first["decision"], first["version"]) == ("accepted", "v1")
  assert first["stats"]["test"]["test"] == "sign" and first["stats"]["test"]["passed"]
  assert first["stats"]["confirm"]["mean_gain"] > 0
  assert len(first["per_seed"]["candidate"]) == 12 + 2  # two stages and the confirmation
  assert all(s == 100.0 for s in first["per_seed"]["candidate"].values())
  assert second["incumbent"] == "r0c0" and second["decision"] == "dropped"
  assert second["stats"]["dropped"]["stage"] == "stage1"
  assert summary["accepted"] == ["v0", "v1"]
  rev = json.loads(pathlib.Path(workdir, "revisions", "v1.json").read_text())
  assert any(f["name"] == "route.txt" for f in rev["files"])
  rows = {r["version"]: r for r in summary["final"]["rows"]}
  assert rows["v1"]["mean"] == 100.0 and rows["v1"]["vs_v0"]["n"] == 3
  # Seed discipline: only the final evaluation played test seeds; the loop used selection
  # (races) and train (review) seeds.
  for h in _headers(os.path.join(workdir, "evals")):
    assert h["seed_set"] == seed_set_of(h["seed"])
  final_sets = {h["seed_set"] for h in _headers(os.path.join(workdir, "evals", "final"))}
  other = {h["seed_set"] for d in ("r0", "r1", "review")
           for h in _headers(os.path.join(workdir, "evals", d))}
  assert final_sets == {"test"} and other == {"selection", "train"}


def test_seed_discipline_is_enforced(tmp_path, agent):
  with pytest.raises(ValueError, match="selection"):
    StructureLoop(loop_config(seed_set="test"), str(tmp_path / "a"), clients={"base": agent})
  loop = StructureLoop(loop_config(), str(tmp_path / "b"), clients={"base": agent})
  with pytest.raises(SeedDisciplineError):
    loop.evaluator.play("v0", "x", "test", 0, 1)
  assert not os.path.exists(tmp_path / "b" / "evals")


class Killed(BaseException):
  """Escapes the runner's error handling, like a kill."""


class KillAfter:
  def __init__(self, client, calls: int):
    self.client, self.left, self.usage = client, calls, client.usage

  async def generate(self, requests):
    self.left -= len(requests)
    if self.left < 0:
      raise Killed()
    return await self.client.generate(requests)


def test_killed_mid_round_resumes_without_replaying(tmp_path, agent):
  workdir = str(tmp_path / "loop")
  config = loop_config(rounds=1, **{"final.episodes": 0})
  proposer = PlantedProposer()
  with pytest.raises(Killed):  # dies during the first round's second stage
    StructureLoop(config, workdir, clients={"base": KillAfter(agent, 150)},
                  proposer=proposer).run()
  assert proposer.calls == 1 and not os.path.exists(os.path.join(workdir, "lineage.jsonl"))
  finished_before = sum(is_finished(os.path.join(d, f)) for d, _, fs in os.walk(workdir)
                        for f in fs if f.endswith(".jsonl") and d.endswith("trajectories"))
  calls_before = agent.calls
  loop = StructureLoop(config, workdir, clients={"base": agent}, proposer=proposer)
  summary = loop.run()
  assert proposer.calls == 1  # the saved proposal was reused, not asked for again
  assert summary["accepted"] == ["v0", "v1"]
  (rec,) = read_lineage(os.path.join(workdir, "lineage.jsonl"))
  total = rec["episodes"] + config.review.episodes
  assert 0 < finished_before < total
  assert loop.evaluator.episodes_played == total - finished_before  # none played twice
  assert agent.calls > calls_before
  # Once more: everything is done, nothing is played.
  again = StructureLoop(config, workdir, clients={"base": agent}, proposer=proposer)
  assert again.run()["accepted"] == ["v0", "v1"] and again.evaluator.episodes_played == 0


def test_aa_calibration_keeps_v0_and_measures_noise(tmp_path, agent):
  summary = StructureLoop(loop_config(calibrate=True, rounds=1), str(tmp_path / "aa"),
                          clients={"base": agent}).run()
  cal = summary["calibration"]
  assert summary["accepted"] == ["v0"] and "final" not in summary
  assert cal["rounds"] == 1 and cal["paired_units"] >= 12
  assert cal["per_seed_gain_sd"] > 0  # another sampling-seed base: different luck per seed
  assert 0.0 <= cal["false_accept_rate"] <= 1.0


class ContinuingProposer:
  """Round 0: blocker.txt (rejected); its continuation sees the deltas and its own traces."""

  name = "planted"

  def __init__(self):
    self.seen = {}

  def propose(self, ctx):
    return [add_file(ctx, "blocker.txt" if ctx.round == 0 else "route.txt")]

  def continue_candidate(self, ctx):
    self.seen = {"deltas": dict(ctx.deltas), "files": [f.name for f in ctx.structure.files],
                 "traces": len(ctx.traces)}
    return [Proposal({"files.6": None}, "drop the blocker again", proposer="planted")]


def test_a_rejected_candidate_gets_one_continuation(tmp_path, agent):
  workdir = str(tmp_path / "loop")
  proposer = ContinuingProposer()
  config = loop_config(rounds=2, continuation=True, **{"final.episodes": 0})
  StructureLoop(config, workdir, clients={"base": agent}, proposer=proposer).run()
  r0, *r1 = read_lineage(os.path.join(workdir, "lineage.jsonl"))
  assert r0["decision"] in ("dropped", "rejected_test")
  assert proposer.seen["deltas"] == {k: v for k, v in r0["stats"]["deltas"].items()}
  assert all(v <= 0 for v in proposer.seen["deltas"].values())
  assert "blocker.txt" in proposer.seen["files"] and proposer.seen["traces"] == 6
  (cont,) = [r for r in r1 if r["continuation_of"]]
  assert cont["continuation_of"] == "r0c0" and cont["base"] == "r0c0"
  assert len(r1) == 2


def test_resume_with_a_different_race_is_refused(tmp_path, agent):
  workdir = str(tmp_path / "loop")
  StructureLoop(loop_config(rounds=0, **{"final.episodes": 0}), workdir, clients={"base": agent})
  with pytest.raises(ValueError, match=r"config\.race"):
    StructureLoop(loop_config(rounds=0, **{"race.level": 0.2, "final.episodes": 0}), workdir,
                  clients={"base": agent})


def test_resume_refuses_any_measured_setting_and_more_rounds_after_the_final(tmp_path, agent):
  workdir = str(tmp_path / "loop")
  start = lambda rounds=0, **over: StructureLoop(  # noqa: E731
      loop_config(rounds=rounds, **{"final.episodes": 0, **over}), workdir,
      clients={"base": agent})
  start()
  for key, value in (("eval.agent.seed", 7), ("eval.game.minihack.max_steps", 9),
                     ("review.episodes", 5), ("rules.model_owned_memory", False),
                     ("calibrate_seed_shift", 5), ("final.offset", 3)):
    with pytest.raises(ValueError, match=rf"different config\.{re.escape(key)} "):
      start(**{key: value})
  start(rounds=3, **{"eval.progress": False, "eval.llm.timeout_s": 5.0})  # not measured
  pathlib.Path(workdir, "final.json").write_text("{}")
  with pytest.raises(ValueError, match=r"config\.rounds after its final test-seed evaluation"):
    start(rounds=4)
  start(rounds=3)


class Silent:
  name = "silent"

  def propose(self, ctx):
    return []


class Repeating:
  name = "repeating"

  def propose(self, ctx):
    return [Proposal({"history_length": 12}, "a"), Proposal({"history_length": 12}, "again"),
            Proposal({"plan.max_iterations": 3}, "b")]


def test_duplicate_proposals_of_a_round_are_dropped_before_racing(tmp_path, agent):
  config = loop_config(rounds=1, **{"final.episodes": 0, "review.episodes": 0})
  loop = StructureLoop(config, str(tmp_path / "loop"), clients={"base": agent},
                       proposer=Repeating())
  state = fold([])
  assert [p.note for p in loop._proposals(0, state, "v0", [])] == ["a", "b"]


def test_two_accepted_siblings_are_merged_and_raced(tmp_path, agent):
  workdir = str(tmp_path / "loop")
  config = loop_config(rounds=3, merge_every=2, **{"final.episodes": 0, "review.episodes": 0})
  loop = StructureLoop(config, workdir, clients={"base": agent}, proposer=Silent())
  v0 = loop.evaluator.load("v0")
  siblings = [Proposal({"history_length": 12}, "longer history", base="v0"),
              Proposal({"plan.max_iterations": 3}, "fewer PLAN turns", base="v0")]
  records = []
  for r, p in enumerate(siblings):  # two rounds whose candidates, both from v0, were accepted
    cid = f"r{r}c0"
    loop.evaluator.save(cid, v0.revise(p.changes, p.note))
    records.append({"round": r, "candidate": cid, "version": f"v{r + 1}", "parent": "v0",
                    "base": "v0", "incumbent": "v0", "change_key": p.key(),
                    "proposal": p.to_dict(), "decision": "accepted", "episodes": 0,
                    "stats": {"summary": {"mean_gain": 1.0}}})
  append_lineage(os.path.join(workdir, "lineage.jsonl"), records)
  loop.run()
  *_, merged = read_lineage(os.path.join(workdir, "lineage.jsonl"))
  assert merged["round"] == 2 and merged["proposer"] == "merge" and merged["base"] == "v0"
  assert merged["proposal"]["changes"] == {"history_length": 12, "plan.max_iterations": 3}
  assert merged["incumbent"] == "r1c0" and merged["per_seed"]["candidate"]


def test_screen_on_capped_dense_episodes_confirm_on_full_ones(tmp_path, agent):
  """NetHack's procedure, on MiniHack: race stages capped with the dense milestone score,
  the confirmation block at the full cap with progression."""
  workdir = str(tmp_path / "loop")
  config = loop_config(rounds=1, **{"race.max_steps": 4, "race.metric": "dense",
                                    "confirm.max_steps": 6, "final.episodes": 0,
                                    "review.episodes": 0})
  StructureLoop(config, workdir, clients={"base": agent}, proposer=PlantedProposer()).run()
  (rec,) = read_lineage(os.path.join(workdir, "lineage.jsonl"))
  lengths = {}
  for block in ("stage1", "confirm"):
    for h in _headers(os.path.join(workdir, "evals", "r0", block)):
      path = os.path.join(workdir, "evals", "r0", block, "incumbent-v0", "trajectories",
                          f"{h['episode_id']}.jsonl")
      if os.path.exists(path):
        *_, end = iter_records(path)
        lengths.setdefault(block, set()).add(end["stats"]["length"])
  assert max(lengths["stage1"]) <= 4 < max(lengths["confirm"]) <= 6
  stage = [s for u, s in rec["per_seed"]["incumbent"].items() if u.startswith("stage1:")]
  assert stage and all(s in (2.0, 102.0) for s in stage)  # Dlvl:1 and Xp:1 count (dense)
  conf = [s for u, s in rec["per_seed"]["incumbent"].items() if u.startswith("confirm:")]
  assert conf and set(conf) <= {0.0, 100.0}  # progression only
