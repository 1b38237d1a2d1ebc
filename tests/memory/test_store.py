"""MemoryStore: files on disk, limits, reset/keep, snapshots and diffs, names."""

from __future__ import annotations

import json
import os

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from automem.memory import (
    InvalidName,
    MemoryStore,
    StoreError,
    StoreLimits,
    apply_diff,
    diff_snapshots,
    diff_summary,
    normalize_name,
)
from automem.memory import store as store_mod
from automem.memory.store import MARKER


def _disk(root):
  out = {}
  for e in os.scandir(root):
    if e.name == MARKER:
      continue
    assert not e.is_symlink(), e.name
    with open(e.path, encoding="utf-8") as f:
      out[e.name] = f.read()
  return out


def test_initial_files_are_on_disk_and_indexed(tmp_path):
  s = MemoryStore(tmp_path / "m", initial_files={"notes.txt": "a\nb\n", "map.txt": ""},
                  descriptions={"notes.txt": "general notes"})
  assert _disk(s.root) == {"notes.txt": "a\nb\n", "map.txt": ""}
  idx = {f.name: f for f in s.index()}
  assert (idx["notes.txt"].lines, idx["notes.txt"].size) == (2, 4)
  assert idx["notes.txt"].description == "general notes"
  assert "- notes.txt (2 lines, 4 bytes): general notes" in s.index_text()


def test_reset_restores_initial_files_and_keeps_chosen_ones(tmp_path):
  s = MemoryStore(tmp_path, initial_files={"a.txt": "init", "lessons.txt": ""},
                  keep=["lessons.txt"])
  s.write("a.txt", "changed")
  s.write("lessons.txt", "never sleep near zombies\n")
  s.write("extra.txt", "temp")
  s.reset()
  assert s.snapshot() == {"a.txt": "init", "lessons.txt": "never sleep near zombies\n"}
  assert _disk(s.root) == s.snapshot()


def test_kept_files_survive_a_restart(tmp_path):
  s = MemoryStore(tmp_path, initial_files={"lessons.txt": "", "a.txt": "a"}, keep=["lessons.txt"])
  s.write("lessons.txt", "avoid lava\n")
  s.write("a.txt", "changed")
  s.close()  # one live store per root; a restart is a new process
  s2 = MemoryStore(tmp_path, initial_files={"lessons.txt": "", "a.txt": "a"}, keep=["lessons.txt"])
  assert s2.snapshot() == {"lessons.txt": "avoid lava\n", "a.txt": "a"}


@pytest.mark.parametrize("limits, op, message", [
    (StoreLimits(max_file_bytes=100), lambda s: s.write("a.txt", "x" * 101), "max_file_bytes"),
    (StoreLimits(max_files=2), lambda s: s.write("c.txt", "x"), "max_files"),
    (StoreLimits(max_file_bytes=100, max_total_bytes=150),
     lambda s: s.write("b.txt", "y" * 100), "max_total_bytes"),
])
def test_limit_breaches_are_refused_and_change_nothing(tmp_path, limits, op, message):
  s = MemoryStore(tmp_path, limits=limits, initial_files={"a.txt": "x" * 60, "b.txt": ""})
  before = s.snapshot()
  with pytest.raises(StoreError) as e:
    op(s)
  assert e.value.limit == message and message in str(e.value)
  assert s.snapshot() == before and _disk(s.root) == before


def test_invalid_limits_are_rejected(tmp_path):
  assert StoreLimits().check() == []
  assert StoreLimits(max_files=0).check()[0][0] == "max_files"
  with pytest.raises(ValueError, match="max_read_chars"):
    MemoryStore(tmp_path, limits=StoreLimits(max_read_chars=5))


@pytest.mark.parametrize("raw, canon", [
    ("notes.txt", "notes.txt"), ("  'notes.txt' ", "notes.txt"),
    ("ｎｏｔｅｓ.txt", "notes.txt"),
    ("ﬁle.txt", "file.txt"), ("Map-2_b.TXT", "Map-2_b.TXT"),
])
def test_names_are_normalised(raw, canon):
  assert normalize_name(raw) == canon


@pytest.mark.parametrize("raw", [
    "", " ", "..", ".", "../x", "a/b", "a\\b", "/etc/passwd", ".hidden", "x\x00y", "a\nb",
    "x" * 65, "\u202etxt.exe", "caf\u00e9.txt", "a..b", "-rf", "~root", "a b.txt", "C:x",
])
def test_hostile_names_are_refused(raw):
  with pytest.raises(InvalidName):
    normalize_name(raw)


def test_case_insensitive_resolution_and_collisions(tmp_path):
  s = MemoryStore(tmp_path, initial_files={"Notes.txt": "x\n"})
  assert s.read_text("notes.TXT") == "x\n"
  s.write("NOTES.txt", "y\n")  # same file
  assert s.names() == ["Notes.txt"] and _disk(s.root) == {"Notes.txt": "y\n"}
  s.write("other.txt", "")
  with pytest.raises(StoreError, match="exists"):
    s.rename("other.txt", "notes.txt")
  with pytest.raises(StoreError, match="already exists"):
    s.write("NOTES.TXT", "", create_only=True)


def test_read_only_files(tmp_path):
  s = MemoryStore(tmp_path, initial_files={"rules.txt": "r"}, read_only=["rules.txt"])
  for op in (lambda: s.write("rules.txt", "x"), lambda: s.delete("rules.txt"),
             lambda: s.rename("rules.txt", "r2.txt")):
    with pytest.raises(StoreError, match="read-only"):
      op()
  assert s.snapshot() == {"rules.txt": "r"}


def test_planted_symlinks_are_never_followed(tmp_path):
  outside = tmp_path / "outside.txt"
  outside.write_text("secret")
  root = tmp_path / "m"
  s = MemoryStore(root, initial_files={"a.txt": "a"})
  os.symlink(outside, root / "link.txt")
  os.remove(root / "a.txt")
  os.symlink(outside, root / "a.txt")
  assert s.read_text("a.txt") == "a"  # the mirror is authoritative
  s.write("a.txt", "new")
  s.write("link.txt", "mine")
  assert outside.read_text() == "secret"
  assert not os.path.islink(root / "a.txt") and (root / "a.txt").read_text() == "new"
  os.symlink(outside, root / "planted.txt")
  os.remove(root / MARKER)
  os.symlink(outside, root / MARKER)
  s.reset()
  assert outside.read_text() == "secret"
  assert sorted(os.listdir(root)) == [MARKER, "a.txt"]
  assert not os.path.islink(root / MARKER)


def test_foreign_non_empty_root_is_refused_and_untouched(tmp_path):
  (tmp_path / "precious.txt").write_text("keep me")
  with pytest.raises(StoreError, match="not a memory store"):
    MemoryStore(tmp_path, initial_files={"a.txt": ""})
  assert os.listdir(tmp_path) == ["precious.txt"]
  MemoryStore(tmp_path / "fresh")  # an empty or new directory is claimed
  assert MemoryStore(tmp_path / "fresh").names() == []  # and reused later


def test_symlinked_root_is_refused(tmp_path):
  (tmp_path / "real").mkdir()
  os.symlink(tmp_path / "real", tmp_path / "alias")
  with pytest.raises(StoreError, match="real directory"):
    MemoryStore(tmp_path / "alias")


def test_atomic_write_leaves_old_content_on_failure(tmp_path, monkeypatch):
  s = MemoryStore(tmp_path, initial_files={"a.txt": "old"})

  def boom(fd, data):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(store_mod.os, "write", boom)
  with pytest.raises(StoreError, match="No space"):
    s.write("a.txt", "new content")
  monkeypatch.undo()
  assert _disk(s.root) == {"a.txt": "old"} and s.snapshot() == {"a.txt": "old"}


def test_content_is_cleaned(tmp_path):
  s = MemoryStore(tmp_path)
  s.write("a.txt", "x\x00y\r\nz\x1b[31m\ud800")
  assert s.read_text("a.txt") == "xy\nz[31m?"


def test_snapshot_restore_round_trip(tmp_path):
  s = MemoryStore(tmp_path, initial_files={"a.txt": "1\n2\n3\n", "b.txt": "b"})
  snap = s.snapshot()
  s.write("a.txt", "1\nTWO\n3\n4\n")
  s.delete("b.txt")
  s.write("c.txt", "c")
  s.restore(snap)
  assert s.snapshot() == snap and _disk(s.root) == snap
  with pytest.raises(StoreError, match="max_file_bytes"):
    s.restore({"a.txt": "x" * (s.limits.max_file_bytes + 1)})
  assert s.snapshot() == snap


def test_diff_is_json_and_readable():
  a = {"map.txt": "1,1: wall\n2,1: floor\n", "old.txt": "x"}
  b = {"map.txt": "1,1: wall\n2,1: door\n3,1: floor\n", "new.txt": "y\n"}
  d = diff_snapshots(a, b)
  assert json.loads(json.dumps(d)) == d
  assert d["added"] == {"new.txt": "y\n"} and d["removed"] == {"old.txt": "x"}
  assert "-2,1: floor" in d["changed"]["map.txt"]["unified"]
  assert "+2,1: door" in d["changed"]["map.txt"]["unified"]
  assert apply_diff(a, d) == b
  assert diff_summary(d).splitlines() == ["+ new.txt (1 lines)", "- old.txt",
                                          "~ map.txt (+2 -1 lines)"]
  with pytest.raises(ValueError):
    apply_diff(b, d)


_lines = st.lists(st.sampled_from(["a", "b", "c", "", "a b", "x\ty", "é"]), max_size=8)
_content = st.tuples(_lines, st.booleans()).map(lambda t: "\n".join(t[0]) + ("\n" if t[1] else ""))
_snap = st.dictionaries(st.sampled_from(["a.txt", "b.txt", "c.txt", "d.txt"]), _content, max_size=4)


@settings(max_examples=300, deadline=None)
@given(_snap, _snap)
def test_apply_diff_reconstructs_any_snapshot(a, b):
  d = diff_snapshots(a, b)
  assert apply_diff(a, json.loads(json.dumps(d))) == b
