"""Property tests: hostile model output never escapes the store or raises.

Each example builds a store inside a sentinel directory that also holds
files, a directory and symlinks the model might aim at, plants links inside
the store root, then runs hostile completions through parse + execute (and
hostile names through the store API directly). Afterwards nothing outside
the root has changed, the root holds only the store's files (plus untouched
planted links), disk and mirror agree, and quotas hold.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import hypothesis.strategies as st
from hypothesis import HealthCheck, event, given, settings

from automem.memory import (
    ALL_OPS,
    InvalidName,
    MemoryStore,
    StoreError,
    StoreLimits,
    execute,
    load_structure,
    normalize_name,
    parse_commands,
)
from automem.memory.store import MARKER

LIMITS = StoreLimits(max_file_bytes=256, max_files=6, max_total_bytes=700, max_read_chars=200,
                     max_search_results=3, max_tail_lines=5)
_BASE = load_structure("crafter")
STRUCTURE = _BASE.revise({
    "limits": LIMITS.to_dict(),
    "files": [{"name": "notes.txt", "content": "start\n"},
              {"name": "rules.txt", "content": "read me\n", "read_only": True}],
    "map_file": "map.txt",
    "log.allowed_ops": [o for o in ALL_OPS if o != "ACTION"],
    "plan.allowed_ops": ["READ", "SEARCH", "TAIL", "COUNT", "LIST", "ACTION"],
}, "tiny limits for hostile tests")

HOSTILE_NAMES = [
    "../outside.txt", "..", ".", "/etc/passwd", "link.txt", "dirlink", "dirlink/x.txt",
    "notes.txt", "NOTES.TXT", "ｎｏｔｅｓ.txt", "ﬁle.txt", "file.txt", "a\x00b.txt",
    "x" * 300,
    ".tmp-0", "\u202egnp.txt", "~", "a/../../b", "C:\\x", "%2e%2e%2f", "ok.txt", "Ok.TXT",
    "'quoted.txt'", "*", "dir/", "rules.txt", "map.txt", "sub\\..\\..\\x", " notes.txt ",
    "\ud800.txt", "nul", "-", "a" * 64, "a" * 65,
]
_names = st.one_of(st.sampled_from(HOSTILE_NAMES), st.text(max_size=24))
_texts = st.one_of(
    st.text(max_size=120),
    st.sampled_from(["x" * 300, "line\n" * 60, "\x00\x1b[2J", "|", "<|END|>", "\ud800\udfff",
                     "a|b|c", "start", "\r\n\r\n", "key: v\nkey: w"]),
)
_op = st.one_of(st.sampled_from(ALL_OPS), st.sampled_from(["read", "Append", "FOO", "END", ""]))
_sep = st.sampled_from(["", "\n", " prose ", "```\n", "<|END|>", "<|", "|>", "</ACTION>"])


@st.composite
def _completion(draw):
  parts = []
  for _ in range(draw(st.integers(0, 6))):
    op = draw(_op)
    args = [draw(_names)] + [draw(_texts) for _ in range(draw(st.integers(0, 3)))]
    style = draw(st.sampled_from(["<|{}|>", "<{}>", "<|{}>", "{}"]))
    end = draw(st.sampled_from(["<|END|>", "<END>", "", "</x>"]))
    parts.append(style.format(op) + "|".join(args) + end + draw(_sep))
  return "".join(parts)


def _tree(top, skip):
  """Every path under `top` except `skip`, with content / link target / dir marker."""
  out = {}
  for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
    if os.path.abspath(dirpath) == skip:
      dirnames[:] = []
      continue
    for n in dirnames + filenames:
      p = os.path.join(dirpath, n)
      if os.path.abspath(p) == skip:
        continue
      if os.path.islink(p):
        out[p] = ("link", os.readlink(p))
      elif os.path.isdir(p):
        out[p] = ("dir",)
      else:
        with open(p, "rb") as f:
          out[p] = ("file", f.read())
  return out


class _Sandbox:

  def __init__(self):
    self.top = tempfile.mkdtemp(prefix="memhostile-")
    self.outside = os.path.join(self.top, "outside.txt")
    with open(self.outside, "w") as f:
      f.write("secret")
    os.makedirs(os.path.join(self.top, "outside_dir"))
    with open(os.path.join(self.top, "outside_dir", "x.txt"), "w") as f:
      f.write("precious")
    self.root = os.path.join(self.top, "run", "mem")
    self.store = MemoryStore.from_structure(self.root, STRUCTURE)
    os.symlink(self.outside, os.path.join(self.root, "link.txt"))
    os.symlink(os.path.join(self.top, "outside_dir"), os.path.join(self.root, "dirlink"))
    self.planted = {"link.txt", "dirlink"}
    self.before = _tree(self.top, self.root)

  def check(self):
    assert _tree(self.top, self.root) == self.before
    s = self.store
    disk = {}
    for e in os.scandir(self.root):
      if e.name == MARKER:
        assert e.is_file(follow_symlinks=False)
        continue
      if e.is_symlink():
        assert e.name in self.planted  # a planted link is replaced or left, never made
        continue
      assert e.is_file() and not e.name.startswith(".tmp-"), e.name
      with open(e.path, encoding="utf-8") as f:
        disk[e.name] = f.read()
    assert disk == s.snapshot()
    for name, content in disk.items():
      assert normalize_name(name) == name
      assert len(content.encode()) <= LIMITS.max_file_bytes
    assert len(disk) <= LIMITS.max_files
    assert s.total_bytes == sum(len(c.encode()) for c in disk.values()) <= LIMITS.max_total_bytes

  def close(self):
    shutil.rmtree(self.top)


_SETTINGS = settings(max_examples=400, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@_SETTINGS
@given(st.lists(st.tuples(st.sampled_from(["log", "plan", "weird"]), _completion()),
                min_size=1, max_size=4), st.booleans())
def test_hostile_completions_never_escape_or_raise(turns, reset_midway):
  box = _Sandbox()
  try:
    for k, (phase, text) in enumerate(turns):
      parsed = parse_commands(text)
      results = execute(box.store, parsed, phase=phase, structure=STRUCTURE if phase != "weird"
                        else None)
      assert len(results) == len(parsed.items)
      for r in results:
        assert "internal error" not in r.text, r.text
        assert isinstance(r.text, str) and r.text
        s, e = r.span
        assert 0 <= s < e <= len(text)
        event(f"{'write' if r.changed else 'read/control' if r.ok else 'refused'}")
      if reset_midway and k == 0:
        box.store.reset()
      box.check()
  finally:
    box.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["write", "delete", "rename", "read", "restore"]),
                          _names, _names, _texts), min_size=1, max_size=6))
def test_hostile_store_api_calls_raise_only_store_errors(calls):
  box = _Sandbox()
  try:
    s = box.store
    for kind, a, b, text in calls:
      try:
        if kind == "write":
          s.write(a, text)
        elif kind == "delete":
          s.delete(a)
        elif kind == "rename":
          s.rename(a, b)
        elif kind == "read":
          s.read_text(a)
        else:
          s.restore({a: text, b: text})
      except StoreError:
        pass
      box.check()
  finally:
    box.close()


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=80), st.sampled_from(HOSTILE_NAMES)))
def test_normalize_name_accepts_only_safe_single_components(raw):
  try:
    name = normalize_name(raw)
  except InvalidName:
    return
  assert name == normalize_name(name)
  assert os.path.basename(name) == name and name not in (".", "..") and ".." not in name
  assert name.isascii() and name.isprintable() and not name.startswith((".", "-"))
  assert os.path.normpath(os.path.join("/r", name)).startswith("/r/")
