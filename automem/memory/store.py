"""A sandboxed, per-episode memory directory with quotas, snapshots and diffs.

Files live on disk under `root` (one flat directory, so a person can open
them) and are mirrored in memory; the mirror is authoritative for reads, so
nothing is ever read back through a path a model could influence. Every
write goes to a fresh temp file in `root` (`O_EXCL | O_NOFOLLOW`) and is
moved into place with `os.replace`, so a crash leaves the old or the new
file, never half of one, and a symlink planted at a file's path is replaced,
not followed. `reset` removes every stray entry (files, links) it finds in
the root; directories planted there are left alone and never read. A root
is claimed with a hidden marker file: a non-empty directory without one is
refused, so a misconfigured root never loses its files.

Snapshots are plain `dict[name, content]` (cheap: strings are shared), and
`diff_snapshots` gives a JSON-serialisable record that `apply_diff` replays.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
import stat
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from absl import logging

from automem.memory.names import DEFAULT_MAX_NAME_LEN, InvalidName, name_key, normalize_name

Snapshot = dict[str, str]
# Hidden file that marks a directory as a memory store (never a valid memory file name).
MARKER = ".automem-store"


@dataclasses.dataclass(frozen=True)
class StoreLimits:
  """Quotas of one store; a command that would break one is refused.

  Attributes:
    max_file_bytes: UTF-8 bytes of one file.
    max_files: number of files.
    max_total_bytes: UTF-8 bytes of all files together.
    max_read_chars: characters returned by one READ/TAIL/SEARCH result
      (READ pages through longer files).
    max_search_results: matching lines shown per SEARCH (the most recent
      ones; the total is always reported).
    max_tail_lines: largest n of TAIL.
    max_name_len: characters of a file name.
  """

  max_file_bytes: int = 16_384
  max_files: int = 32
  max_total_bytes: int = 262_144
  max_read_chars: int = 4_000
  max_search_results: int = 50
  max_tail_lines: int = 100
  max_name_len: int = DEFAULT_MAX_NAME_LEN

  def to_dict(self) -> dict[str, int]:
    return dataclasses.asdict(self)

  def check(self) -> list[tuple[str, str]]:
    """Problems as (field, message); empty when every limit is in range."""
    out = []
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      lo, hi = LIMIT_RANGES[f.name]
      if not isinstance(value, int) or isinstance(value, bool):
        out.append((f.name, f"must be an integer, got {value!r}"))
      elif not lo <= value <= hi:
        out.append((f.name, f"must be in [{lo}, {hi}], got {value}"))
    if not out and self.max_total_bytes < self.max_file_bytes:
      out.append(("max_total_bytes", "must be at least max_file_bytes"))
    return out


LIMIT_RANGES: dict[str, tuple[int, int]] = {
    "max_file_bytes": (64, 1 << 20),
    "max_files": (1, 1000),
    "max_total_bytes": (64, 64 << 20),
    "max_read_chars": (100, 200_000),
    "max_search_results": (1, 1000),
    "max_tail_lines": (1, 10_000),
    "max_name_len": (8, 128),
}


class StoreError(ValueError):
  """A refused store operation; the message is meant for the agent.

  Attributes:
    limit: the name of the `StoreLimits` field that was hit, if any.
  """

  def __init__(self, message: str, limit: str | None = None):
    super().__init__(message)
    self.limit = limit


@dataclasses.dataclass(frozen=True)
class FileInfo:
  """One row of the file index shown to the agent."""

  name: str
  size: int
  lines: int
  description: str = ""

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def clean_content(text: str) -> str:
  """File content as stored: valid UTF-8, `\\n` line ends, no control chars but tab."""
  if not isinstance(text, str):
    text = str(text)
  text = text.encode("utf-8", "replace").decode("utf-8")
  text = text.replace("\r\n", "\n").replace("\r", "\n")
  if any((ord(c) < 32 and c not in "\n\t") or ord(c) == 127 for c in text):
    text = "".join(c for c in text if not ((ord(c) < 32 and c not in "\n\t") or ord(c) == 127))
  return text


def count_lines(text: str) -> int:
  return len(text.splitlines())


class MemoryStore:
  """The memory directory of one episode slot.

  Args:
    root: directory of this store (created; must not be a symlink).
    limits: quotas.
    initial_files: name -> content written on every `reset`.
    descriptions: name -> one-line description shown in the index.
    keep: names whose content survives `reset` (kept across episodes of a
      run); they start from `initial_files` the first time, or from their
      content in `root` when a resumed run finds them there.
    read_only: names the agent may read but not change.
    durable: fsync each write (survives power loss, not just crashes).
  """

  def __init__(
      self,
      root: str | os.PathLike[str],
      *,
      limits: StoreLimits | None = None,
      initial_files: Mapping[str, str] | None = None,
      descriptions: Mapping[str, str] | None = None,
      keep: Iterable[str] = (),
      read_only: Iterable[str] = (),
      durable: bool = False,
  ):
    self.limits = limits or StoreLimits()
    problems = self.limits.check()
    if problems:
      raise ValueError(f"invalid StoreLimits: {problems}")
    self._root = os.path.abspath(os.fspath(root))
    self.durable = durable
    os.makedirs(self._root, exist_ok=True)
    self._check_root()
    self._claim_root()
    self._initial: dict[str, str] = {}
    for name, content in (initial_files or {}).items():
      canon = normalize_name(name, self.limits.max_name_len)
      self._initial[canon] = clean_content(content)
    self._initial_desc = {normalize_name(n, self.limits.max_name_len): str(d)
                          for n, d in (descriptions or {}).items()}
    self._keep = {name_key(normalize_name(n, self.limits.max_name_len)) for n in keep}
    self._read_only = {name_key(normalize_name(n, self.limits.max_name_len)) for n in read_only}
    self._files: dict[str, str] = {}
    self._desc: dict[str, str] = {}
    self._total = 0
    self._load_kept_from_disk()
    self.reset()

  @classmethod
  def from_structure(
      cls, root: str | os.PathLike[str], structure: Any, **kwargs: Any) -> MemoryStore:
    """A store with the initial files, descriptions, limits and kept files of a structure."""
    return cls(
        root,
        limits=structure.limits,
        initial_files={f.name: f.content for f in structure.files},
        descriptions={f.name: f.description for f in structure.files},
        keep=[f.name for f in structure.files if f.persist],
        read_only=[f.name for f in structure.files if f.read_only],
        **kwargs,
    )

  # --- inspection -----------------------------------------------------------------------

  @property
  def root(self) -> str:
    return self._root

  @property
  def total_bytes(self) -> int:
    return self._total

  def names(self) -> list[str]:
    return sorted(self._files, key=name_key)

  def resolve(self, raw: str) -> str:
    """The stored name a model-written name refers to (case-insensitive).

    Raises:
      StoreError: invalid name or no such file.
    """
    name = self._normalize(raw)
    found = self._find(name)
    if found is None:
      listing = ", ".join(self.names()) or "none"
      raise StoreError(f"no file named {name!r} (files: {listing})")
    return found

  def exists(self, raw: str) -> bool:
    try:
      return self._find(self._normalize(raw)) is not None
    except StoreError:
      return False

  def read_text(self, raw: str) -> str:
    """The whole content of a file (for programs; the agent pages with READ)."""
    return self._files[self.resolve(raw)]

  def description(self, raw: str) -> str:
    return self._desc.get(self.resolve(raw), "")

  def is_read_only(self, name: str) -> bool:
    return name_key(name) in self._read_only

  def index(self) -> list[FileInfo]:
    return [
        FileInfo(n, len(self._files[n].encode("utf-8")), count_lines(self._files[n]),
                 self._desc.get(n, ""))
        for n in self.names()
    ]

  def index_text(self) -> str:
    """The file index as prompt text, one line per file."""
    rows = []
    for f in self.index():
      ro = ", read-only" if self.is_read_only(f.name) else ""
      desc = f": {f.description}" if f.description else ""
      rows.append(f"- {f.name} ({f.lines} lines, {f.size} bytes{ro}){desc}")
    return "\n".join(rows) if rows else "(no files)"

  # --- snapshots ------------------------------------------------------------------------

  def snapshot(self) -> Snapshot:
    return dict(self._files)

  def restore(self, snapshot: Mapping[str, str]) -> None:
    """Makes the store hold exactly `snapshot` (descriptions of kept names stay).

    Raises:
      StoreError: the snapshot has an invalid name or breaks a limit; the
        store is unchanged then.
    """
    target: dict[str, str] = {}
    for name, content in snapshot.items():
      canon = self._normalize(name)
      if name_key(canon) in {name_key(n) for n in target}:
        raise StoreError(f"snapshot has two names for one file: {canon!r}")
      target[canon] = clean_content(content)
    self._check_quota(target)
    for name in list(self._files):
      if name not in target:
        self._unlink(name)
        del self._files[name]
        self._desc.pop(name, None)
    for name, content in target.items():
      if self._files.get(name) != content:
        self._atomic_write(name, content)
        self._files[name] = content
    self._total = sum(len(c.encode("utf-8")) for c in self._files.values())

  def reset(self) -> None:
    """Starts a new episode: initial files, plus the kept files' last content."""
    kept = {n: c for n, c in self._files.items() if name_key(n) in self._keep}
    kept_desc = {n: self._desc.get(n, "") for n in kept}
    self._check_root()
    for entry in os.scandir(self._root):
      try:
        st = entry.stat(follow_symlinks=False)
        if entry.name == MARKER and stat.S_ISREG(st.st_mode):
          continue
        if stat.S_ISDIR(st.st_mode):
          logging.warning("memory store %s: ignoring directory %r", self._root, entry.name)
          continue
        os.unlink(entry.path)  # a symlink is removed itself, never its target
      except OSError as e:
        raise StoreError(f"cannot clear {entry.path}: {e}") from e
    self._files, self._desc, self._total = {}, {}, 0
    self._claim_root()
    files = dict(self._initial)
    descs = dict(self._initial_desc)
    for name, content in kept.items():
      for n in [n for n in files if name_key(n) == name_key(name)]:
        del files[n]
      files[name] = content
      descs[name] = kept_desc[name] or descs.get(name, "")
    self._check_quota(files)
    for name, content in files.items():
      self._atomic_write(name, content)
      self._files[name] = content
    self._desc = {n: d for n, d in descs.items() if n in self._files}
    self._total = sum(len(c.encode("utf-8")) for c in self._files.values())

  # --- mutation (used by the executor; each call is all-or-nothing) ----------------------

  def write(self, raw: str, content: str, *, create_only: bool = False,
            must_exist: bool = False, description: str | None = None) -> str:
    """Creates or replaces a file. Returns the stored name.

    Raises:
      StoreError: invalid name, read-only file, existence mismatch or a limit.
    """
    name = self._normalize(raw)
    existing = self._find(name)
    if existing is not None:
      if create_only:
        raise StoreError(f"file {existing!r} already exists")
      name = existing
    elif must_exist:
      self.resolve(name)  # raises with the listing
    if self.is_read_only(name):
      raise StoreError(f"file {name!r} is read-only")
    content = clean_content(content)
    new = dict(self._files)
    new[name] = content
    self._check_quota(new)
    self._atomic_write(name, content)
    self._total += len(content.encode("utf-8")) - len(self._files.get(name, "").encode("utf-8"))
    self._files[name] = content
    if description is not None:
      self._desc[name] = clean_content(description).replace("\n", " ").strip()[:200]
    return name

  def delete(self, raw: str) -> str:
    name = self.resolve(raw)
    if self.is_read_only(name):
      raise StoreError(f"file {name!r} is read-only")
    self._unlink(name)
    self._total -= len(self._files.pop(name).encode("utf-8"))
    self._desc.pop(name, None)
    return name

  def rename(self, raw_old: str, raw_new: str) -> tuple[str, str]:
    old = self.resolve(raw_old)
    new = self._normalize(raw_new)
    clash = self._find(new)
    if clash is not None and clash != old:
      raise StoreError(f"cannot rename {old!r} to {new!r}: {clash!r} exists")
    if self.is_read_only(old) or self.is_read_only(new):
      raise StoreError(f"file {old!r} is read-only")
    if old == new:
      return old, new
    self._check_root()
    try:
      os.replace(self._path(old), self._path(new))
    except OSError as e:
      raise StoreError(f"cannot rename {old!r}: {e.strerror}") from e
    self._files[new] = self._files.pop(old)
    if old in self._desc:
      self._desc[new] = self._desc.pop(old)
    return old, new

  # --- internals ------------------------------------------------------------------------

  def _claim_root(self) -> None:
    """Marks the root as a memory store; refuses a non-empty directory that is not one.

    `reset` deletes every file in the root, so a misconfigured root (a run
    directory, a home directory) must be caught before anything is removed.
    """
    marker = os.path.join(self._root, MARKER)
    try:
      st = os.lstat(marker)
      if stat.S_ISREG(st.st_mode):
        return
      os.unlink(marker)  # something planted under the marker's name
    except FileNotFoundError:
      if any(e.name != MARKER for e in os.scandir(self._root)):
        raise StoreError(f"{self._root} is not empty and is not a memory store; refusing to use "
                         "it (reset would delete its files)") from None
    except OSError as e:
      raise StoreError(f"cannot use {self._root} as a memory store: {e}") from e
    fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    with os.fdopen(fd, "w") as f:
      f.write("automem memory store: files here are replaced at every episode reset\n")

  def _load_kept_from_disk(self) -> None:
    """Kept files already in the root (a resumed run) start from their content on disk."""
    if not self._keep:
      return
    for entry in os.scandir(self._root):
      try:
        if (name_key(entry.name) not in self._keep or not entry.is_file(follow_symlinks=False)
            or normalize_name(entry.name, self.limits.max_name_len) != entry.name):
          continue
        fd = os.open(entry.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
          if not stat.S_ISREG(os.fstat(fd).st_mode):
            continue
          data = os.read(fd, self.limits.max_file_bytes + 1)
        finally:
          os.close(fd)
      except (OSError, InvalidName):
        continue
      if len(data) <= self.limits.max_file_bytes:
        self._files[entry.name] = clean_content(data.decode("utf-8", "replace"))

  def _normalize(self, raw: str) -> str:
    try:
      return normalize_name(raw, self.limits.max_name_len)
    except InvalidName as e:
      raise StoreError(f"invalid file name: {e}") from e

  def _find(self, name: str) -> str | None:
    if name in self._files:
      return name
    key = name_key(name)
    for n in self._files:
      if name_key(n) == key:
        return n
    return None

  def _path(self, name: str) -> str:
    # `name` passed normalize_name: one component from [A-Za-z0-9._-], no '..'.
    return os.path.join(self._root, name)

  def _check_root(self) -> None:
    try:
      st = os.lstat(self._root)
    except OSError as e:
      raise StoreError(f"memory root {self._root} is not accessible: {e}") from e
    if not stat.S_ISDIR(st.st_mode):
      raise StoreError(f"memory root {self._root} must be a real directory, not a link or file")

  def _check_quota(self, files: Mapping[str, str]) -> None:
    lim = self.limits
    if len(files) > lim.max_files:
      raise StoreError(f"limit max_files ({lim.max_files}) reached; delete or merge a file first",
                       "max_files")
    total = 0
    for name, content in files.items():
      size = len(content.encode("utf-8"))
      if size > lim.max_file_bytes:
        raise StoreError(
            f"limit max_file_bytes ({lim.max_file_bytes}) exceeded: {name!r} would have "
            f"{size} bytes; shorten it or keep only what matters", "max_file_bytes")
      total += size
    if total > lim.max_total_bytes:
      raise StoreError(f"limit max_total_bytes ({lim.max_total_bytes}) exceeded: memory would hold "
                       f"{total} bytes", "max_total_bytes")

  def _atomic_write(self, name: str, content: str) -> None:
    self._check_root()
    tmp = os.path.join(self._root, f".tmp-{uuid.uuid4().hex}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
      fd = os.open(tmp, flags, 0o644)
      try:
        os.write(fd, content.encode("utf-8"))
        if self.durable:
          os.fsync(fd)
      finally:
        os.close(fd)
      os.replace(tmp, self._path(name))
    except OSError as e:
      with contextlib.suppress(OSError):
        os.unlink(tmp)
      raise StoreError(f"cannot write {name!r}: {e.strerror}") from e

  def _unlink(self, name: str) -> None:
    self._check_root()
    try:
      os.unlink(self._path(name))
    except FileNotFoundError:
      pass
    except OSError as e:
      raise StoreError(f"cannot delete {name!r}: {e.strerror}") from e


# --- snapshot diffs -----------------------------------------------------------------------


def diff_snapshots(a: Mapping[str, str], b: Mapping[str, str], context: int = 1) -> dict[str, Any]:
  """What changed from snapshot `a` to snapshot `b`, JSON-serialisable.

  Returns:
    `{"added": {name: content}, "removed": {name: content},
    "changed": {name: {"unified": str, "ops": [[tag, i1, i2, [lines]]...]}}}`
    where `ops` are line operations on `a[name].splitlines(keepends=True)`
    (`replace`/`delete`/`insert` of lines `i1:i2` by the given lines) that
    `apply_diff` replays exactly, and `unified` is the same change as a
    unified diff for people and reviewers.
  """
  added = {n: b[n] for n in sorted(b) if n not in a}
  removed = {n: a[n] for n in sorted(a) if n not in b}
  changed = {}
  for n in sorted(set(a) & set(b)):
    if a[n] == b[n]:
      continue
    la, lb = a[n].splitlines(keepends=True), b[n].splitlines(keepends=True)
    ops = [[tag, i1, i2, lb[j1:j2]]
           for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, la, lb).get_opcodes()
           if tag != "equal"]
    unified = "\n".join(difflib.unified_diff(
        a[n].splitlines(), b[n].splitlines(), f"a/{n}", f"b/{n}", n=context, lineterm=""))
    changed[n] = {"unified": unified, "ops": ops}
  return {"added": added, "removed": removed, "changed": changed}


def apply_diff(a: Mapping[str, str], diff: Mapping[str, Any]) -> Snapshot:
  """Replays `diff_snapshots(a, b)` on `a`, giving `b`.

  Raises:
    ValueError: the diff does not fit `a`.
  """
  out = dict(a)
  for n in diff.get("removed", {}):
    if n not in out:
      raise ValueError(f"diff removes {n!r}, which is not in the snapshot")
    del out[n]
  for n, content in diff.get("added", {}).items():
    if n in out:
      raise ValueError(f"diff adds {n!r}, which is already in the snapshot")
    out[n] = content
  for n, change in diff.get("changed", {}).items():
    if n not in out:
      raise ValueError(f"diff changes {n!r}, which is not in the snapshot")
    lines = out[n].splitlines(keepends=True)
    result, pos = [], 0
    for _tag, i1, i2, new in change["ops"]:
      if i1 < pos or i2 > len(lines):
        raise ValueError(f"diff of {n!r} does not fit the snapshot")
      result.extend(lines[pos:i1])
      result.extend(new)
      pos = i2
    result.extend(lines[pos:])
    out[n] = "".join(result)
  return out


def diff_summary(diff: Mapping[str, Any]) -> str:
  """One line per touched file, for logs and reviewer prompts."""
  rows = [f"+ {n} ({count_lines(c)} lines)" for n, c in diff.get("added", {}).items()]
  rows += [f"- {n}" for n in diff.get("removed", {})]
  for n, ch in diff.get("changed", {}).items():
    plus = sum(len(op[3]) for op in ch["ops"])
    minus = sum(op[2] - op[1] for op in ch["ops"])
    rows.append(f"~ {n} (+{plus} -{minus} lines)")
  return "\n".join(rows)
