"""The store's promises under a full disk, kill -9, races, planted entries and hostile output.

Real processes throughout: a child process with a small RLIMIT_FSIZE plays the
full disk, a child killed with SIGKILL plays the crashed run, another holds the
root's lock.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from automem.memory import (
    MemoryStore,
    StoreError,
    StoreLimits,
    execute,
    format_results,
    parse_commands,
    results_budget,
)
from automem.memory import store as store_mod
from automem.memory.store import MARKER, MARKER_TEXT, TMP_PREFIX

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_WORKER = os.path.join(_REPO, "tests", "memory", "store_worker.py")


def _spawn(mode: str, root) -> subprocess.Popen:
  env = {**os.environ, "PYTHONPATH": _REPO}
  return subprocess.Popen([sys.executable, _WORKER, mode, str(root)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True, env=env)


def _disk(root) -> dict[str, str]:
  out = {}
  for e in os.scandir(root):
    if e.name != MARKER:
      assert e.is_file(follow_symlinks=False), e.name
      with open(e.path, encoding="utf-8") as f:
        out[e.name] = f.read()
  return out


# --- a file system that fills up --------------------------------------------------------


@pytest.fixture(scope="module")
def full_disk_worker(tmp_path_factory):
  root = tmp_path_factory.mktemp("fsize") / "mem"
  proc = _spawn("serve", root)
  yield root, proc
  proc.stdin.close()
  proc.wait(timeout=30)


def _ask(proc, case):
  proc.stdin.write(json.dumps(case) + "\n")
  proc.stdin.flush()
  return json.loads(proc.stdout.readline())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fsize=st.integers(0, 3000), size=st.integers(1, 6000), name=st.sampled_from(["a.txt", "b.txt"]))
def test_a_full_disk_never_leaves_a_short_file(full_disk_worker, fsize, size, name):
  root, proc = full_disk_worker
  before = _ask(proc, {"fsize": None, "name": "a.txt", "content": "old\n"})["mirror"]
  assert _disk(root) == before
  content = ("0123456789abcde\n" * (size // 16 + 1))[:size]
  got = _ask(proc, {"fsize": fsize, "name": name, "content": content})
  if size <= fsize:
    assert got["ok"], got["error"]
    assert got["mirror"][name] == content
  else:  # a write past the limit fails and changes nothing, on disk or in the mirror
    assert not got["ok"] and f"cannot write {name!r}" in got["error"]
    assert got["mirror"] == before
  assert _disk(root) == got["mirror"]  # no truncated file, no temp file left behind


# --- kill -9 during writes --------------------------------------------------------------


def _check_version(text: str) -> None:
  head, _, body = text.partition("\n")
  assert head == f"len={len(body)}", text[:80]
  numbers = {line.split()[0] for line in body.splitlines()}
  assert len(numbers) == 1, numbers


@pytest.mark.parametrize("writes_before_kill", [1, 37, 160])
def test_kill_9_during_writes_leaves_complete_files_and_a_free_root(tmp_path, writes_before_kill):
  root = tmp_path / "mem"
  proc = _spawn("churn", root)
  acked = 0
  while acked < writes_before_kill:  # poll on the child's acknowledgements, not on time
    acked = int(proc.stdout.readline())
  proc.send_signal(signal.SIGKILL)
  proc.wait(timeout=30)
  for name in os.listdir(root):
    if name != MARKER and not name.startswith(TMP_PREFIX):
      _check_version((root / name).read_text())
  # The kill released the lock; the kept file resumes from an acknowledged (or later) version.
  with MemoryStore(root, limits=StoreLimits(max_file_bytes=1 << 16), initial_files={"log.txt": ""},
                   keep=["log.txt"]) as s:
    _check_version(s.read_text("log.txt"))
    assert int(s.read_text("log.txt").split("\n")[1].split()[0][1:]) >= acked
    assert sorted(os.listdir(root)) == [MARKER, "log.txt"]  # temp files and scratch swept


# --- one writer per store ---------------------------------------------------------------


def test_a_live_root_is_locked_against_other_stores_and_processes(tmp_path):
  root = tmp_path / "mem"
  s = MemoryStore(root, initial_files={"a.txt": "a"})
  with pytest.raises(StoreError, match="in use by another live store"):
    MemoryStore(root)
  s.close()
  holder = _spawn("hold", root)
  assert holder.stdout.readline().strip() == "ready"
  with pytest.raises(StoreError, match="in use by another live store"):
    MemoryStore(root)
  holder.stdin.close()
  holder.wait(timeout=30)
  assert MemoryStore(root).names() == []  # free again once the holder is gone


def test_threads_sharing_a_store_lose_no_write_and_keep_quotas(tmp_path):
  limits = StoreLimits(max_file_bytes=4000, max_total_bytes=6000)
  s = MemoryStore(tmp_path / "mem", limits=limits)
  start = threading.Barrier(4)
  results: list[list] = [[] for _ in range(4)]

  def work(k):
    start.wait()
    for i in range(60):
      cmd = f"<|APPEND|>f{i % 2}.txt|t{k} n{i:02d} {'x' * 20}<|END|>"
      results[k] += execute(s, parse_commands(cmd), phase="log")

  threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  acked = sorted(r.args[1] for rs in results for r in rs if r.ok)
  stored = sorted(line for n in s.names() for line in s.read_text(n).splitlines())
  assert acked == stored  # every acknowledged line is there, nothing else
  assert any(not r.ok and "max_total_bytes" in r.text for rs in results for r in rs)
  assert s.total_bytes <= limits.max_total_bytes and _disk(s.root) == s.snapshot()


# --- the root is opened once ------------------------------------------------------------


def test_renaming_the_roots_parent_cannot_redirect_writes(tmp_path):
  (tmp_path / "run").mkdir()
  s = MemoryStore(tmp_path / "run" / "mem", initial_files={"a.txt": "a"})
  os.rename(tmp_path / "run", tmp_path / "moved")
  os.makedirs(tmp_path / "run" / "mem")  # an attacker's directory at the old path
  s.write("a.txt", "new")
  s.write("b.txt", "b")
  s.rename("b.txt", "c.txt")
  s.delete("a.txt")
  assert os.listdir(tmp_path / "run" / "mem") == []
  assert _disk(tmp_path / "moved" / "mem") == {"c.txt": "b"} == s.snapshot()


# --- restore and reset are all-or-nothing -----------------------------------------------

_names = st.sampled_from(["a.txt", "b.txt", "c.txt", "d.txt"])
_snap = st.dictionaries(_names, st.text("xyz\n", max_size=20), max_size=4)


@settings(max_examples=30, deadline=None)
@given(before=_snap, after=_snap, fail_at=st.integers(0, 6), how=st.sampled_from(["replace",
                                                                                    "unlink"]))
def test_restore_fails_whole_or_not_at_all(tmp_path_factory, before, after, fail_at, how):
  s = MemoryStore(tmp_path_factory.mktemp("r") / "mem")
  s.restore(before)
  real = getattr(os, how)
  calls = []

  def flaky(*args, **kwargs):
    calls.append(args)
    if len(calls) == fail_at + 1:  # one call fails (the roll-back may use the same call)
      raise OSError(13, "Permission denied")
    return real(*args, **kwargs)

  try:
    with pytest.MonkeyPatch.context() as mp:
      mp.setattr(store_mod.os, how, flaky)
      s.restore(after)
  except StoreError as e:
    assert "Permission denied" in str(e)
    assert s.snapshot() == before and _disk(s.root) == before
  else:
    assert s.snapshot() == after and _disk(s.root) == after
  assert s.total_bytes == sum(len(c.encode()) for c in s.snapshot().values())
  s.close()


def test_a_planted_directory_fails_restore_and_reset_without_changes(tmp_path):
  s = MemoryStore(tmp_path / "mem", initial_files={"a.txt": "init"})
  s.write("a.txt", "changed")
  s.write("b.txt", "b")
  before = s.snapshot()
  os.mkdir(tmp_path / "mem" / "z.txt")
  with pytest.raises(StoreError, match="not a file holds its name"):
    s.restore({"a.txt": "x", "z.txt": "z"})
  assert s.snapshot() == before and _disk_files(s.root) == before
  os.rmdir(tmp_path / "mem" / "z.txt")
  os.remove(tmp_path / "mem" / "a.txt")
  os.mkdir(tmp_path / "mem" / "a.txt")
  with pytest.raises(StoreError, match="not a file holds its name"):
    s.reset()
  assert s.snapshot() == before
  assert (tmp_path / "mem" / "b.txt").read_text() == "b"  # nothing deleted before the failure


def _disk_files(root) -> dict[str, str]:
  return {e.name: open(e.path).read() for e in os.scandir(root)
          if e.name != MARKER and e.is_file(follow_symlinks=False)}


# --- claiming a root --------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(kind=st.sampled_from(["other text", "empty", "dir", "link to file", "link to dir",
                             "fifo", "dangling link"]),
       others=st.booleans())
def test_a_foreign_directory_is_never_claimed_whatever_sits_at_the_marker(tmp_path_factory, kind,
                                                                          others):
  top = tmp_path_factory.mktemp("claim")
  root = top / "root"
  root.mkdir()
  (top / "target.txt").write_text("t")
  marker = root / MARKER
  if kind in ("other text", "empty"):
    marker.write_text("" if kind == "empty" else "my notes\n")
  elif kind == "dir":
    marker.mkdir()
  elif kind == "fifo":
    os.mkfifo(marker)
  else:
    os.symlink({"link to file": top / "target.txt", "link to dir": top,
                "dangling link": top / "nowhere"}[kind], marker)
  if others:
    (root / "precious.txt").write_text("keep me")
  listing = sorted(os.listdir(root))
  with pytest.raises(StoreError, match="not a memory store"):
    MemoryStore(root, initial_files={"a.txt": ""})
  assert sorted(os.listdir(root)) == listing
  assert (top / "target.txt").read_text() == "t"


def test_a_store_root_is_claimed_with_the_exact_marker_text(tmp_path):
  MemoryStore(tmp_path / "mem").close()
  assert (tmp_path / "mem" / MARKER).read_text() == MARKER_TEXT


# --- bounded results and text that cleans to nothing ------------------------------------


@settings(max_examples=12, deadline=None)
@given(n_unknown=st.integers(0, 3000), query_len=st.integers(1, 20_000),
       read_chars=st.integers(100, 2000))
def test_every_text_returned_to_the_model_is_bounded(tmp_path_factory, n_unknown, query_len,
                                                     read_chars):
  limits = StoreLimits(max_read_chars=read_chars, max_files=50)
  s = MemoryStore(tmp_path_factory.mktemp("b") / "mem", limits=limits)
  for i in range(40):
    s.write(f"file{i:02d}_{'n' * 40}.txt", "q" * 10, description="d" * 200)
  q = "q" * query_len
  text = (f"<|SEARCH|>*|{q}<|END|><|COUNT|>file00_{'n' * 40}.txt|{q}<|END|><|LIST|>"
          + "<|NOPE|>" * n_unknown)
  results = execute(s, parse_commands(text), phase="log", max_commands=100)
  for r in results[:3]:
    assert r.ok and len(r.text) <= read_chars + 200, (r.op, len(r.text))
  assert len(format_results(results)) <= results_budget(limits) + 300
  if n_unknown > 200:
    assert "not shown" in format_results(results)
  s.close()


@pytest.mark.parametrize("cmd", ["<|WRITE|>a.txt|\x01\x02<|END|>", "<|APPEND|>a.txt|\x1b\x07<|END|>",
                                 "<|UPSERT|>a.txt|\x01|v<|END|>", "<|UPSERT|>a.txt|k|\x02<|END|>",
                                 "<|EDIT|>a.txt|keep|\x03<|END|>",
                                 "<|APPEND|>a.txt|\u200b\u200b<|END|>",
                                 "<|WRITE|>a.txt|\u202e\u202e<|END|>",
                                 "<|APPEND|>a.txt|\ufeff \u2060<|END|>"])
def test_text_that_cleans_to_nothing_is_an_error(tmp_path, cmd):
  s = MemoryStore(tmp_path / "mem", initial_files={"a.txt": "keep\n"})
  [r] = execute(s, parse_commands(cmd), phase="log")
  assert not r.ok and "only control or invisible characters" in r.text
  assert s.snapshot() == {"a.txt": "keep\n"} == _disk(s.root)
