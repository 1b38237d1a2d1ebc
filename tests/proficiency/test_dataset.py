"""Masked SFT data: selection files, the command-only loss mask, packing, splits, batches."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import numpy as np
import pytest

from automem.memory import parse_commands
from automem.proficiency import batches, dataset, selection, synthetic


def _turns(synth_run):
  return selection.load_turns(selection.select_log_turns(synth_run))


def test_synthetic_spans_are_what_the_memory_parser_reads(synth_run):
  for rec in _turns(synth_run)[:12]:
    parsed = list(parse_commands(rec.completion))
    assert [(p.op, tuple(p.span)) for p in parsed] == [
        (c["op"], tuple(c["span"])) for c in rec.commands]


def test_mask_is_exactly_the_trained_commands(synth_run, chat_tok):
  cfg = dataset.DatasetConfig()
  seen_ops = set()
  for rec in _turns(synth_run)[:12]:
    ex = dataset.tokenize_turn(rec, chat_tok, cfg)
    ids, offsets = chat_tok.encode_with_offsets(rec.completion)
    w = ex.weights[ex.prompt_len:ex.prompt_len + len(ids)]
    assert not ex.weights[:ex.prompt_len].any(), "prompt tokens must not be trained"
    assert ex.ids[-1] == chat_tok.end_of_turn_id and ex.weights[-1] == 0
    trained = [c for c in rec.commands if c["ok"] and c["op"] != "ACTION"]
    seen_ops |= {c["op"] for c in rec.commands}
    covered = np.zeros(len(rec.completion), bool)
    for (a, b), wt in zip(offsets, w):
      hits = [c for c in trained if a < c["span"][1] and b > c["span"][0]]
      assert (wt > 0) == bool(hits), (rec.completion[a:b], wt)
      if wt > 0:
        covered[a:b] = True
    for c in trained:
      assert covered[c["span"][0]:c["span"][1]].all(), c
  assert {"ACTION", "READ", "DONE", "APPEND"} <= seen_ops  # excluded and trained ops occurred


def test_train_eos_and_failed_commands_options(synth_run, chat_tok):
  rec = next(r for r in _turns(synth_run) if any(not c["ok"] for c in r.commands))
  base = dataset.tokenize_turn(rec, chat_tok, dataset.DatasetConfig())
  more = dataset.tokenize_turn(rec, chat_tok, dataset.DatasetConfig(train_failed=True,
                                                                    train_eos=True))
  assert more.weights[-1] == 1 and base.weights[-1] == 0
  assert (more.weights > 0).sum() > (base.weights > 0).sum() + 1
  assert more.ops["READ"] == 1 and base.ops["READ"] == 0


def test_turn_without_recorded_commands_falls_back_to_the_parser(synth_run, chat_tok):
  rec = _turns(synth_run)[0]
  bare = dataclasses.replace(rec, commands=[])
  a = dataset.tokenize_turn(rec, chat_tok, dataset.DatasetConfig())
  b = dataset.tokenize_turn(bare, chat_tok, dataset.DatasetConfig())
  np.testing.assert_array_equal(a.weights, b.weights)


def test_selection_file_round_trip_subset_and_weight(synth_run, chat_tok, tmp_path):
  refs = selection.select_log_turns(synth_run)
  chosen = [dataclasses.replace(refs[0], commands=(0,), weight=0.5, score=3.0), refs[1]]
  path = str(tmp_path / "sel" / selection.SELECTION_FILE)
  def killed():  # a writer that dies mid-file leaves a temp the stale sweep can attribute
    yield chosen[0]
    raise KeyboardInterrupt
  with pytest.raises(KeyboardInterrupt):
    selection.write_selected_turns(path, killed())
  assert os.listdir(tmp_path / "sel") == [f"{selection.SELECTION_FILE}.tmp{os.getpid()}"]
  assert selection.write_selected_turns(path, chosen) == 2
  line = json.loads(pathlib.Path(path).read_text().splitlines()[0])
  assert not os.path.isabs(line["trajectory"])  # relative to the selection file
  back = selection.read_selected_turns(path)
  assert [os.path.realpath(r.trajectory) for r in back] == [
      os.path.realpath(r.trajectory) for r in chosen]
  assert back[0].commands == (0,) and back[0].weight == 0.5 and back[0].score == 3.0
  recs = selection.load_turns(back)
  ex = dataset.tokenize_turn(recs[0], chat_tok, dataset.DatasetConfig())
  assert set(np.unique(ex.weights)) == {0.0, 0.5}
  assert dict(ex.ops) == {recs[0].commands[0]["op"]: 1}


def test_bad_selection_input_is_reported_with_its_location(synth_run, tmp_path):
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"trajectory": "x.jsonl", "step": 1}\n')
  with pytest.raises(ValueError, match=r"bad\.jsonl:1"):
    selection.read_selected_turns(str(bad))
  ref = selection.select_log_turns(synth_run)[0]
  with pytest.raises(KeyError, match="step=999"):
    selection.load_turns([dataclasses.replace(ref, step=999)])
  rec = selection.load_turns([ref])[0]
  broken = dataclasses.replace(rec, commands=[{"op": "APPEND", "span": [0, 10**6], "ok": True}])
  with pytest.raises(ValueError, match="outside"):
    dataset.trained_spans(broken, dataset.DatasetConfig())


def test_packed_rows_keep_examples_apart(packed):
  data_dir, stats = packed
  rows = dataset.load_split(data_dir, "train")
  seg, pos, inp, tgt, w = (np.asarray(rows[k]) for k in (
      "segment_ids", "positions", "inputs", "targets", "weights"))
  assert stats["train"]["rows"] == seg.shape[0] and seg.shape[1] == 128
  assert stats["train"]["tokens"] == int((seg > 0).sum())
  assert not w[seg == 0].any()
  for r in range(seg.shape[0]):
    ids = seg[r][seg[r] > 0]
    assert (np.diff(ids) >= 0).all() and ids[0] == 1  # contiguous segments 1, 2, ...
    assert (seg[r][len(ids):] == 0).all()  # padding only at the end
    for s in np.unique(ids):
      m = seg[r] == s
      np.testing.assert_array_equal(pos[r][m], np.arange(m.sum()))  # restart per segment
      np.testing.assert_array_equal(tgt[r][m][:-1], inp[r][m][1:])  # next-token targets
  # First fit (all rows stay open at this size): no example of a later row would have fitted
  # into the room an earlier row has left.
  assert seg.shape[0] <= 64
  room = 128 - (seg > 0).sum(1)
  smallest = [min(np.bincount(seg[r][seg[r] > 0])[1:]) for r in range(seg.shape[0])]
  for j in range(1, seg.shape[0]):
    assert room[:j].max() < smallest[j]
  tokens, rows = stats["train"]["tokens"], stats["train"]["rows"]
  assert stats["train"]["packing_efficiency"] == pytest.approx(tokens / (rows * 128))
  assert 0 < stats["train"]["masked_fraction"] < 0.5


def test_split_is_by_whole_episodes_and_stats_count_ops(packed, synth_run):
  data_dir, stats = packed
  assert stats["val"]["episodes"] >= 1 and stats["train"]["episodes"] >= 1
  assert stats["train"]["episodes"] + stats["val"]["episodes"] == 12
  assert stats["train"] == json.loads(pathlib.Path(data_dir, "stats.json").read_text())["train"]
  n = stats["train"]["examples"] + stats["val"]["examples"]
  assert n == 12 * 6
  assert stats["train"]["op_mix"]["DONE"] == stats["train"]["examples"]
  assert "ACTION" not in stats["train"]["op_mix"]
  val = dataset.split_episodes([f"e{i}" for i in range(20)], 0.25, seed=3)
  assert len(val) == 5 and val == dataset.split_episodes(
      [f"e{i}" for i in reversed(range(20))], 0.25, seed=3)


def test_long_examples_are_truncated_from_the_prompt_or_dropped(synth_run, chat_tok):
  rec = _turns(synth_run)[0]
  long = dataclasses.replace(rec, messages=[{"role": "user", "content": "tree " * 300}])
  ex = dataset.tokenize_turn(long, chat_tok, dataset.DatasetConfig())
  comp = len(ex.ids) - ex.prompt_len
  fitted, cut = dataset.fit_to_row(ex, comp + 10, "truncate_left")
  assert cut and len(fitted.ids) == comp + 11
  np.testing.assert_array_equal(fitted.ids[-comp:], ex.ids[-comp:])
  assert fitted.weights.sum() == ex.weights.sum()
  assert dataset.fit_to_row(ex, comp + 10, "drop") == (None, False)
  assert dataset.fit_to_row(ex, comp - 2, "truncate_left") == (None, False)
  row = len(dataset.tokenize_turn(rec, chat_tok, dataset.DatasetConfig()).ids) + 5
  assert row < len(ex.ids)
  _, stats = dataset.build_dataset([long, rec], chat_tok, dataset.DatasetConfig(
      row_length=row, val_fraction=0.0))
  assert stats["train"]["truncated"] == 1 and stats["train"]["examples"] == 2
  _, stats = dataset.build_dataset([long, rec], chat_tok, dataset.DatasetConfig(
      row_length=row, val_fraction=0.0, overflow="drop"))
  assert stats["train"]["dropped"] == 1 and stats["train"]["examples"] == 1


def test_batches_are_deterministic_and_cover_each_epoch(packed):
  rows = dataset.load_split(packed[0], "train")
  src = batches.BatchSource(rows, accum_steps=2, micro_batch=2, seed=5)
  np.testing.assert_array_equal(src.row_indices(3), src.row_indices(3))
  epoch = np.concatenate([src.row_indices(s).ravel() for s in range(src.batches_per_epoch)])
  assert len(set(epoch.tolist())) == len(epoch) == src.batches_per_epoch * 4
  b = src.local_batch(1)
  assert b["inputs"].shape == (2, 2, 128)
  np.testing.assert_array_equal(b["inputs"][1, 0], rows["inputs"][src.row_indices(1)[1, 0]])
  assert src.position(src.batches_per_epoch + 1).epoch == 1
  with pytest.raises(ValueError, match="cannot fill one batch"):
    batches.BatchSource(rows, accum_steps=64, micro_batch=64, seed=0)


def test_eval_batches_visit_every_row_once(packed):
  rows = dataset.load_split(packed[0], "val")
  seen = sum(float(np.asarray(b["weights"]).sum()) for b in batches.eval_batches(rows, 4))
  assert seen == pytest.approx(float(rows["weights"].sum()))


def test_synthetic_trajectories_have_header_turns_and_end(tmp_path):
  paths = synthetic.write_synthetic_trajectories(str(tmp_path), num_episodes=2, steps=3)
  lines = [json.loads(x) for x in pathlib.Path(paths[0]).read_text().splitlines()]
  assert lines[0]["type"] == "header" and lines[-1]["type"] == "end"
  assert {x["phase"] for x in lines if x["type"] == "turn"} == {"log", "plan"}


def test_turns_with_nothing_to_train_are_counted_not_packed(synth_run, chat_tok):
  rec = _turns(synth_run)[0]
  action_only = dataclasses.replace(rec, completion="<|ACTION|>Noop<|END|>", commands=[])
  data, stats = dataset.build_dataset([rec, action_only], chat_tok, dataset.DatasetConfig(
      row_length=512, val_fraction=0.0))
  assert stats["train"]["untrained"] == 1 and stats["train"]["examples"] == 1
  assert (data["train"]["segment_ids"].max(axis=1) == 1).all()  # one example per row at most
