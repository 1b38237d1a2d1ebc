"""Selectors on hand-made episodes whose commands really ran: exact expected verdicts."""

from __future__ import annotations

import json
import pathlib

import pytest

from automem.agent import AgentConfig, End, Header, Step, Turn, read_trajectory, write_trajectory
from automem.credit import (
  CombineConfig,
  CounterfactualConfig,
  DeterministicConfig,
  balance_games,
  counterfactual,
  deterministic_candidates,
  episode_usage,
  near_unlock,
  plan_forks,
  top_episodes,
  usage_scores,
)
from automem.credit.combine import combine, percentiles, selection_stats, write_selection
from automem.credit.judge import parse_verdict, stratified_sample
from automem.credit.requery import find_probes, withhold
from automem.credit.select import SelectionConfig, load_structures
from automem.memory import MemoryStore, diff_snapshots, load_structure
from automem.proficiency import read_selected_turns
from automem.proficiency.selection import load_turns
from automem.proficiency.synthetic import run_turn
from automem.rollout.seeds import seeds
from automem.utils import InputError

# (step, phase, completion) in the order the agent would run them.
SCRIPT = [
    (0, "log", "<|APPEND|>notes.txt|tree north<|END|><|APPEND|>notes.txt|water east<|END|>"
               "<|DONE|>"),
    (0, "plan", "<|SEARCH|>notes.txt|tree<|END|>"),
    (0, "plan", "<|ACTION|>Move North<|END|>"),
    (1, "log", "```\n<|WRITE|>notes.txt|stone west<|END|>\n```\n<|APPEND|>notes.txt|stone west"
               "<|END|><|READ|>nope.txt<|END|><|DONE|><|APPEND|>notes.txt|late<|END|>"),
    (1, "plan", "<|SEARCH|>notes.txt|zzz<|END|>"),
    (1, "plan", "<|ACTION|>Do<|END|>"),
    (2, "plan", "<|TAIL|>notes.txt|5<|END|>"),
    (2, "plan", "<|TAIL|>notes.txt|5<|END|><|ACTION|>Do<|END|>"),
]


def write_episode(tmp_path, name="e0", progression=50.0, game="crafter", seed=1, seed_set=""):
  store = MemoryStore(str(tmp_path / "mem" / name))
  store.reset()
  header = Header(episode_id=name, game=game, task=game, seed=seed, seed_set=seed_set,
                  action_names=["Move North", "Do"], initial_memory=store.snapshot())
  records, turn_no, last = [], 0, None
  for step, phase, text in SCRIPT:
    turn_no = turn_no + 1 if (step, phase) == last else 0
    last = (step, phase)
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": f"step {step}"}]
    if records and records[-1].phase == "plan" and records[-1].step == step:
      messages.append({"role": "user", "content": records[-1].commands[0]["result"]})
    t = run_turn(store, name, step, phase, messages, text)
    records.append(t.__class__(**{**t.__dict__, "turn": turn_no}))
  steps = [Step(step=s, action=a, achievements=["wood"] if s >= 1 else [],
                unlocked=["wood"] if s == 1 else [], progression=progression)
           for s, a in ((0, "Move North"), (1, "Do"), (2, "Do"))]
  path = tmp_path / "trajectories" / f"{name}.jsonl"
  path.parent.mkdir(exist_ok=True)
  write_trajectory(path, header, [*records[:3], steps[0], *records[3:6], steps[1], *records[6:],
                                  steps[2], End(episode_id=name, stats={"progression": progression},
                                                final_memory=store.snapshot())])
  return read_trajectory(path)


@pytest.fixture
def episode(tmp_path):
  return write_episode(tmp_path)


def test_deterministic_filter_is_the_papers_post_processing(episode):
  cands, stats = deterministic_candidates([episode])
  got = {(c.step, c.phase, c.turn): c.commands for c in cands}
  # LOG cut at DONE (the APPEND after it is not trained), the failed READ dropped; PLAN turns
  # keep their reads, never the ACTION; ACTION-only turns are dropped.
  assert got == {(0, "log", 0): (0, 1, 2), (0, "plan", 0): (0,), (1, "log", 0): (0, 1, 3),
                 (1, "plan", 0): (0,), (2, "plan", 0): (0,), (2, "plan", 1): (0,)}
  assert stats["dropped_no_memory_command"] == 2 and stats["fenced"] == 1
  assert "failed 1" in next(c.reason for c in cands if c.step == 1 and c.phase == "log")
  plan_only = deterministic_candidates([episode], DeterministicConfig(phases=("plan",)))[0]
  assert {c.phase for c in plan_only} == {"plan"}


def test_usage_credit_follows_lines_through_the_diffs(episode):
  u = episode_usage(episode)
  lines = {(x.step, x.text): x for x in u.lines}
  assert lines[(0, "tree north")].retrieved_before_commit
  assert lines[(0, "water east")].removed_unread and not lines[(0, "water east")].retrieved
  assert not lines[(0, "tree north")].removed_unread  # it was read before the WRITE
  assert [x.duplicate for x in u.lines if x.step == 1] == [False, True]
  reads = {(r.turn[1], r.turn[3]): r for r in u.reads}
  assert reads[(1, 0)].empty and reads[(2, 1)].redundant and not reads[(2, 0)].redundant
  cands, _ = deterministic_candidates([episode])
  scores = {(s.step, s.phase, s.turn): s.score for s in usage_scores(cands, [episode])}
  assert scores[(0, "log", 0)] == pytest.approx((1.0 - 0.5) / 2)
  assert scores[(1, "log", 0)] == pytest.approx((1.0 + 0.5) / 2)
  assert scores[(1, "plan", 0)] == -0.5 and scores[(2, "plan", 1)] == -0.25
  assert scores[(0, "plan", 0)] == 0.25


def test_count_shows_no_lines_so_it_retrieves_nothing(tmp_path):
  store = MemoryStore(str(tmp_path / "mem"))
  store.reset()
  header = Header(episode_id="c", game="crafter", task="crafter", seed=1,
                  action_names=["Do"], initial_memory=store.snapshot())
  msgs = [{"role": "user", "content": "x"}]
  log = run_turn(store, "c", 0, "log", msgs, "<|WRITE|>notes.txt|tree\nwater<|END|><|DONE|>")
  count = run_turn(store, "c", 0, "plan", msgs, "<|COUNT|>notes.txt<|END|>")
  assert count.commands[0]["meta"]["returned"] == {"notes.txt": [1, 2]}  # what it counted
  commit = run_turn(store, "c", 0, "plan", [*msgs, {"role": "user", "content":
                                                    count.commands[0]["result"]}],
                    "<|ACTION|>Do<|END|>")
  commit = commit.__class__(**{**commit.__dict__, "turn": 1})
  path = tmp_path / "c.jsonl"
  write_trajectory(path, header, [log, count, commit, Step(step=0, action="Do"),
                                  End(episode_id="c", final_memory=store.snapshot())])
  traj = read_trajectory(path)
  u = episode_usage(traj)
  assert [x.retrieved for x in u.lines] == [0, 0] and u.reads == []
  assert find_probes([traj]) == []  # nothing shown, nothing to withhold


def test_usage_follows_the_harness_diffs_like_memory_before(tmp_path):
  m0, m1, m2 = ({"notes.txt": ""}, {"notes.txt": "tree north\nwater east\n"},
                {"notes.txt": "water east\n"})  # retention keeps the last line after step 0
  read = {"op": "READ", "args": ["notes.txt"], "span": [0, 1], "ok": True,
          "result": "1: water east", "meta": {"returned": {"notes.txt": [1]}}}
  write = {"op": "WRITE", "args": ["notes.txt", "tree north\nwater east"], "span": [0, 1],
           "ok": True, "result": "ok"}
  records = [
      Turn(step=0, phase="log", turn=0, completion="w", episode_id="h", commands=[write],
           memory_diff=diff_snapshots(m0, m1)),
      Step(step=0, action="Do", episode_id="h", extra={"harness_diff": diff_snapshots(m1, m2)}),
      Turn(step=1, phase="plan", turn=0, completion="r", episode_id="h", commands=[read]),
      Step(step=1, action="Do", episode_id="h"), End(episode_id="h", final_memory=m2)]
  write_trajectory(tmp_path / "h.jsonl", Header(episode_id="h", game="crafter", task="crafter",
                                                seed=1, initial_memory=m0), records)
  traj = read_trajectory(tmp_path / "h.jsonl")
  assert traj.memory_before(1, "plan", 0) == m2
  lines = {x.text: x for x in episode_usage(traj).lines}
  assert lines["water east"].retrieved == 1 and lines["water east"].retrieved_before_commit
  assert lines["tree north"].retrieved == 0 and lines["tree north"].removed_unread


def test_outcome_filters(tmp_path):
  good = write_episode(tmp_path, "good", 80.0)
  bad = write_episode(tmp_path, "bad", 10.0)
  cands, _ = deterministic_candidates([good, bad])
  assert {c.episode_id for c in top_episodes(cands, [good, bad], 0.5)} == {"good"}
  near = near_unlock(cands, [good], window=0)  # "wood" unlocked at step 1
  assert {c.step for c in near} == {1}
  other = write_episode(tmp_path, "other", 10.0, game="nethack")
  more, _ = deterministic_candidates([good, bad, other])
  even = balance_games(more)  # as many Crafter turns as NetHack has
  assert [c.game for c in even].count("crafter") == [c.game for c in even].count("nethack") == 6
  assert [c.key for c in balance_games(more, cap=2)] == [c.key for c in more[:2]] + [
      c.key for c in more if c.game == "nethack"][:2]


def test_combine_ranks_weights_and_writes_the_trainers_format(tmp_path, episode):
  cands, _ = deterministic_candidates([episode])
  scored = {"usage": usage_scores(cands, [episode])}
  pct = percentiles(scored["usage"])
  assert min(pct.values()) == 0.0 and max(pct.values()) == 1.0
  passed = {"deterministic": {c.key: c.reason for c in cands}}
  sel = combine(cands, passed, scored, [episode], CombineConfig(keep_fraction=0.5))
  assert len(sel) == 3 and sel[0].score >= sel[-1].score
  assert sel[0].weight == pytest.approx(0.5 + sel[0].score)
  assert (sel[0].turn.step, sel[0].turn.phase) == (1, "log")  # the best usage score
  stats = selection_stats(sel, cands, passed, scored, [episode])
  out = tmp_path / "sel"
  path = write_selection(str(out), sel, stats)
  refs = read_selected_turns(path)
  assert [(r.step, r.phase, r.turn) for r in refs] == [
      (s.turn.step, s.turn.phase, s.turn.turn) for s in sel]
  turns = load_turns(refs)
  row = json.loads(pathlib.Path(path).read_text().splitlines()[0])
  assert row["selectors"] == ["deterministic", "usage"] and "usage" in row["reasons"]
  a, b = row["spans"][0]
  assert turns[0].completion[a:b].startswith("<|WRITE|>")
  saved = json.loads((out / "selection_stats.json").read_text())
  assert saved["by_op"]["WRITE"] == 1 and saved["selected"] == 3


def test_turns_no_scorer_scored_rank_last(episode):
  cands, _ = deterministic_candidates([episode])
  usage = sorted(usage_scores(cands, [episode]), key=lambda s: -s.score)
  best, rest = usage[0], usage[1:]  # the best turn, left unscored
  sel = combine(cands, {}, {"usage": rest}, [episode], CombineConfig())
  assert sel[-1].turn.key == best.key and sel[-1].score == 0.0 and sel[-1].scores == {}
  assert all(s.score >= 0.0 for s in sel[:-1]) and sel[-2].score == 0.0  # the lowest scored
  assert sel[-1].weight == CombineConfig().min_weight
  plain = combine(cands, {}, {}, [episode], CombineConfig())  # no scorer: all equal
  assert {s.score for s in plain} == {0.5} and {s.weight for s in plain} == {1.0}


def test_requery_probes_withhold_exactly_the_retrieved_lines(episode):
  probes = find_probes([episode])
  assert [(p.step, p.commit.turn) for p in probes] == [(0, 1), (2, 1)]
  msgs = withhold(probes[0].commit.messages, probes[0].results)
  assert "tree north" in probes[0].commit.messages[-1]["content"]
  assert "tree north" not in msgs[-1]["content"] and "(lines withheld)" in msgs[-1]["content"]
  assert msgs[:2] == probes[0].commit.messages[:2]  # the shared prefix is untouched


def test_seed_sets_are_judged_by_the_seed_and_loop2_takes_train_episodes(tmp_path):
  from automem.credit import select_decisions

  def run(**kw):
    return select_decisions([str(tmp_path)], str(tmp_path / "sel"), SelectionConfig(**kw))

  write_episode(tmp_path, "ok", 30.0)
  write_episode(tmp_path, "sel", 30.0, seed=seeds("selection", 1)[0])
  with pytest.raises(InputError, match=r"not from the train seed set .*e\.g\. sel \(seed "
                                       r"1000000 of the selection set\).*allow_selection_seeds"):
    run()
  selected, _ = run(allow_selection_seeds=True)
  assert {s.turn.episode_id for s in selected} == {"ok", "sel"}
  write_episode(tmp_path, "liar", 30.0, seed=seeds("test", 1)[0], seed_set="train")
  with pytest.raises(InputError, match=r"test-set episode.*liar \(seed 2000000 of the test set, "
                                       r"its header says 'train'\)"):
    run(allow_selection_seeds=True)


def test_each_episode_forks_with_its_own_structure_and_agent_settings(tmp_path):
  a = write_episode(tmp_path / "runA", "a")
  b = write_episode(tmp_path / "runB", "b")
  for run, history in (("runA", 3), ("runB", 9)):
    (tmp_path / run / "structures").mkdir()
    load_structure("crafter").revise({"history_length": history}, "x").save(
        str(tmp_path / run / "structures" / "crafter.json"))
  (tmp_path / "runC").mkdir()
  c = write_episode(tmp_path / "runC", "c")  # no structures/ in its run dir
  got = load_structures([a, b, c])
  assert {p: s.history_length for p, s in got.items()} == {a.path: 3, b.path: 9}
  cands, _ = deterministic_candidates([a, b])
  forks = plan_forks(cands, [a, b], CounterfactualConfig(max_decisions=2, samples=1))
  configs = {a.path: AgentConfig(seed=1), b.path: AgentConfig(seed=2)}
  for f in forks:
    structure, config = counterfactual._own(f, got, configs)
    assert structure is got[f.decision.trajectory] and config is configs[f.decision.trajectory]


def test_judge_answers_and_samples():
  assert parse_verdict('ok {"score": 7, "reason": "good"}') == (0.7, "good")
  assert parse_verdict('{"score": 11}')[0] is None and parse_verdict("no")[0] is None

  class C:
    def __init__(self, game, phase):
      self.game, self.phase = game, phase

  items = [C("a", "log")] * 6 + [C("b", "plan")] * 2
  picked = stratified_sample(items, 4, seed=0)
  assert sorted(c.game for c in picked) == ["a", "a", "b", "b"]


def test_the_job_config_runs_and_test_seeds_are_refused(tmp_path):
  from automem.credit import select_decisions
  from automem.credit.select import selection_config
  from experiments.configs import select_decisions as job

  for variant in (None, *job.VARIANTS):
    cfg = selection_config(job.get_config(variant).to_dict())
    assert set(cfg.scorers) <= {"usage", "requery", "counterfactual", "judge"}
  write_episode(tmp_path, "a", 30.0)
  selected, stats = select_decisions([str(tmp_path)], str(tmp_path / "sel"),
                                     selection_config(job.get_config().to_dict()))
  assert stats["selected"] == len(selected) == 6 and stats["scored"] == {"usage": 6}
  with open(tmp_path / "trajectories" / "t.jsonl", "w") as f:
    for rec in (Header(episode_id="t", seed_set="test"), End()):
      f.write(json.dumps(rec.to_json()) + "\n")
  with pytest.raises(ValueError, match="test-set episode"):
    select_decisions([str(tmp_path)], str(tmp_path / "sel2"),
                     selection_config(job.get_config().to_dict()))
