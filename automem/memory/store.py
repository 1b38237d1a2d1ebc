"""A sandboxed, per-episode memory directory with quotas, snapshots and diffs.

Files live on disk under `root` (one flat directory, so a person can open
them) and are mirrored in memory; the mirror is authoritative for reads, so
nothing is ever read back through a path a model could influence.

Promises (each has a test in tests/memory/test_store_durability.py):

- The root is opened once, as a directory descriptor without following a
  link (`O_DIRECTORY | O_NOFOLLOW`); every open, replace, unlink and rename
  is done relative to that descriptor, so renaming the root's parents cannot
  redirect a write outside it.
- A write is complete or fails: content goes to a fresh temp file
  (`O_EXCL | O_NOFOLLOW`), is written in full, fsynced and its size checked,
  then moved into place with `os.replace`. A full disk or a file-size limit
  gives a `StoreError` and leaves the previous content on disk and in the
  mirror. With `durable=True` the directory is fsynced too (power loss).
- `restore` and `reset` are all-or-nothing: every new file is staged first,
  then moved into place, and files are deleted last; on any failure the
  files already moved are put back and the mirror is left unchanged.
- A root is claimed with a hidden marker file holding a fixed text. A
  non-empty directory without exactly that marker (whatever entry sits at
  its name) is refused, so a misconfigured root never loses its files.
- One writer per store: the root descriptor holds an exclusive `flock`; a
  second store on a live root (another process, or the same one) is refused
  with a `StoreError` until the first is `close()`d. Calls on one store are
  serialised by a lock, so threads sharing a store cannot lose writes.

Snapshots are plain `dict[name, content]` (cheap: strings are shared), and
`diff_snapshots` gives a JSON-serialisable record that `apply_diff` replays.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import errno
import fcntl
import functools
import os
import stat
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from absl import logging

from automem.memory.names import DEFAULT_MAX_NAME_LEN, InvalidName, name_key, normalize_name

Snapshot = dict[str, str]
# Hidden file that marks a directory as a memory store (never a valid memory file name).
MARKER = ".automem-store"
MARKER_TEXT = "automem memory store: files here are replaced at every episode reset\n"
# Prefix of staged temp files (never a valid memory file name either).
TMP_PREFIX = ".tmp-"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_T = TypeVar("_T")


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


def _locked(method: Callable[..., _T]) -> Callable[..., _T]:
  """Runs a store method under the store's lock (threads sharing one store)."""

  @functools.wraps(method)
  def wrapper(self: MemoryStore, *args: Any, **kwargs: Any) -> _T:
    with self._lock:
      return method(self, *args, **kwargs)

  return wrapper


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
    durable: also fsync the directory after each change (survives power
      loss, not just a killed process; file contents are always fsynced).

  Raises:
    StoreError: the root is a link or not a directory, is a non-empty
      directory that is not a store, or is held by another live store.
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
    self._fd = -1
    self._lock = threading.RLock()
    self.limits = limits or StoreLimits()
    problems = self.limits.check()
    if problems:
      raise ValueError(f"invalid StoreLimits: {problems}")
    self._root = os.path.abspath(os.fspath(root))
    self.durable = durable
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
    try:
      os.makedirs(self._root, exist_ok=True)
    except OSError as e:
      raise StoreError(f"cannot create memory root {self._root}: {e.strerror}") from e
    self._fd = self._open_root()
    try:
      self._claim_root()
      self._load_kept_from_disk()
      self.reset()
    except BaseException:
      self.close()
      raise

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

  def close(self) -> None:
    """Releases the root (its lock and descriptor); the mirror stays readable."""
    with self._lock:
      if self._fd >= 0:
        with contextlib.suppress(OSError):
          os.close(self._fd)  # closing the descriptor drops its flock
        self._fd = -1

  def locked(self) -> threading.RLock:
    """The store's (re-entrant) lock: hold it across a read-modify-write such as APPEND."""
    return self._lock

  @property
  def closed(self) -> bool:
    return self._fd < 0

  def __enter__(self) -> MemoryStore:
    return self

  def __exit__(self, *exc: object) -> None:
    self.close()

  def __del__(self) -> None:
    with contextlib.suppress(Exception):
      self.close()

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

  def index_text(self, max_chars: int | None = None) -> str:
    """The file index as prompt text, one line per file.

    Args:
      max_chars: cut the listing to whole rows within this many characters
        and say how many files were left out.
    """
    rows = []
    for f in self.index():
      ro = ", read-only" if self.is_read_only(f.name) else ""
      desc = f": {f.description}" if f.description else ""
      rows.append(f"- {f.name} ({f.lines} lines, {f.size} bytes{ro}){desc}")
    if not rows:
      return "(no files)"
    if max_chars is not None:
      used, kept = 0, []
      for row in rows:
        if used + len(row) + 1 > max_chars - 40:
          break
        kept.append(row)
        used += len(row) + 1
      if len(kept) < len(rows):
        rows = [*kept, f"({len(rows) - len(kept)} more file(s) not listed)"]
    return "\n".join(rows)

  # --- snapshots ------------------------------------------------------------------------

  def snapshot(self) -> Snapshot:
    return dict(self._files)

  @_locked
  def restore(self, snapshot: Mapping[str, str]) -> None:
    """Makes the store hold exactly `snapshot` (descriptions of kept names stay).

    Raises:
      StoreError: the snapshot has an invalid name or breaks a limit, or a
        file cannot be written or removed; the store (disk and mirror) is
        unchanged then.
    """
    target: dict[str, str] = {}
    for name, content in snapshot.items():
      canon = self._normalize(name)
      if name_key(canon) in {name_key(n) for n in target}:
        raise StoreError(f"snapshot has two names for one file: {canon!r}")
      target[canon] = clean_content(content)
    self._check_quota(target)
    self._commit(target)
    self._desc = {n: d for n, d in self._desc.items() if n in target}

  @_locked
  def reset(self) -> None:
    """Starts a new episode: initial files, plus the kept files' last content.

    Stray entries in the root (files and links the store did not write) are
    removed last; directories planted there are left alone and never read.

    Raises:
      StoreError: a file cannot be written or removed; the store is unchanged.
    """
    kept = {n: c for n, c in self._files.items() if name_key(n) in self._keep}
    kept_desc = {n: self._desc.get(n, "") for n in kept}
    files = dict(self._initial)
    descs = dict(self._initial_desc)
    for name, content in kept.items():
      for n in [n for n in files if name_key(n) == name_key(name)]:
        del files[n]
      files[name] = content
      descs[name] = kept_desc[name] or descs.get(name, "")
    self._check_quota(files)
    self._commit(files, sweep=True, rewrite=True)
    self._desc = {n: d for n, d in descs.items() if n in self._files}

  # --- mutation (used by the executor; each call is all-or-nothing) ----------------------

  @_locked
  def write(self, raw: str, content: str, *, create_only: bool = False,
            must_exist: bool = False, description: str | None = None,
            harness: bool = False) -> str:
    """Creates or replaces a file. Returns the stored name.

    `harness=True` is the agent harness's own write (a harness-maintained or
    retention-trimmed file): it may change a read-only file.

    Raises:
      StoreError: invalid name, read-only file, existence mismatch, a limit,
        or a write that could not be completed (disk full, ...): the old
        content is kept on disk and in the mirror then.
    """
    name = self._normalize(raw)
    existing = self._find(name)
    if existing is not None:
      if create_only:
        raise StoreError(f"file {existing!r} already exists")
      name = existing
    elif must_exist:
      self.resolve(name)  # raises with the listing
    if self.is_read_only(name) and not harness:
      raise StoreError(f"file {name!r} is read-only")
    content = clean_content(content)
    new = dict(self._files)
    new[name] = content
    self._check_quota(new)
    self._check_root()
    tmp = self._stage(name, content)
    self._move_into_place(tmp, name)
    self._total += len(content.encode("utf-8")) - len(self._files.get(name, "").encode("utf-8"))
    self._files[name] = content
    if description is not None:
      self._desc[name] = clean_content(description).replace("\n", " ").strip()[:200]
    return name

  @_locked
  def delete(self, raw: str) -> str:
    name = self.resolve(raw)
    if self.is_read_only(name):
      raise StoreError(f"file {name!r} is read-only")
    self._check_root()
    self._unlink(name)
    self._total -= len(self._files.pop(name).encode("utf-8"))
    self._desc.pop(name, None)
    return name

  @_locked
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
    self._check_replaceable(new)
    try:
      os.replace(old, new, src_dir_fd=self._fd, dst_dir_fd=self._fd)
    except OSError as e:
      raise StoreError(f"cannot rename {old!r}: {e.strerror}") from e
    self._sync_dir()
    self._files[new] = self._files.pop(old)
    if old in self._desc:
      self._desc[new] = self._desc.pop(old)
    return old, new

  # --- internals: the root --------------------------------------------------------------

  def _open_root(self) -> int:
    """The root as a directory descriptor (no link followed), exclusively locked."""
    try:
      fd = os.open(self._root, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW)
    except OSError as e:
      if e.errno in (errno.ELOOP, errno.ENOTDIR):
        raise StoreError(
            f"memory root {self._root} must be a real directory, not a link or file") from e
      raise StoreError(f"memory root {self._root} is not accessible: {e.strerror}") from e
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      os.close(fd)
      if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
        raise StoreError(f"memory root {self._root} is in use by another live store "
                         "(one writer per store; close the other one first)") from e
      raise StoreError(f"cannot lock memory root {self._root}: {e.strerror}") from e
    return fd

  def _claim_root(self) -> None:
    """Marks the root as a memory store; refuses a non-empty directory that is not one.

    `reset` deletes every file in the root, so a misconfigured root (a run
    directory, a home directory) must be caught before anything is removed:
    only a regular marker file with the exact marker text counts.
    """
    try:
      st = os.stat(MARKER, dir_fd=self._fd, follow_symlinks=False)
    except FileNotFoundError:
      st = None
    except OSError as e:
      raise StoreError(f"cannot use {self._root} as a memory store: {e.strerror}") from e
    if st is not None and stat.S_ISREG(st.st_mode) and self._marker_ok():
      return
    if st is not None or os.listdir(self._fd):
      raise StoreError(f"{self._root} is not empty and is not a memory store; refusing to use "
                       "it (reset would delete its files)")
    self._write_marker()

  def _marker_ok(self) -> bool:
    try:
      fd = os.open(MARKER, os.O_RDONLY | _NOFOLLOW, dir_fd=self._fd)
    except OSError:
      return False
    try:
      return stat.S_ISREG(os.fstat(fd).st_mode) and os.read(fd, 4096) == MARKER_TEXT.encode()
    finally:
      os.close(fd)

  def _write_marker(self) -> None:
    tmp = self._stage(MARKER, MARKER_TEXT)
    self._move_into_place(tmp, MARKER)

  def _check_root(self) -> None:
    if self._fd < 0:
      raise StoreError(f"memory store {self._root} is closed")
    try:
      st = os.fstat(self._fd)
    except OSError as e:
      raise StoreError(f"memory root {self._root} is not accessible: {e.strerror}") from e
    if st.st_nlink == 0:
      raise StoreError(f"memory root {self._root} was removed")

  def _sync_dir(self) -> None:
    if self.durable:
      with contextlib.suppress(OSError):
        os.fsync(self._fd)

  def _load_kept_from_disk(self) -> None:
    """Kept files already in the root (a resumed run) start from their content on disk."""
    if not self._keep:
      return
    for entry in os.listdir(self._fd):
      try:
        if (name_key(entry) not in self._keep
            or normalize_name(entry, self.limits.max_name_len) != entry):
          continue
        fd = os.open(entry, os.O_RDONLY | _NOFOLLOW | os.O_NONBLOCK, dir_fd=self._fd)
        try:
          if not stat.S_ISREG(os.fstat(fd).st_mode):
            continue
          data = os.read(fd, self.limits.max_file_bytes + 1)
        finally:
          os.close(fd)
      except (OSError, InvalidName):
        continue
      if len(data) <= self.limits.max_file_bytes:
        self._files[entry] = clean_content(data.decode("utf-8", "replace"))
    self._total = sum(len(c.encode("utf-8")) for c in self._files.values())

  # --- internals: names and quotas ------------------------------------------------------

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

  # --- internals: complete-or-fail file operations --------------------------------------

  def _stage(self, name: str, content: str) -> str:
    """Writes `content` in full to a fresh temp file in the root; returns its name.

    Raises:
      StoreError: the write was short or failed (disk full, file-size limit);
        no temp file is left behind.
    """
    data = content.encode("utf-8")
    tmp = f"{TMP_PREFIX}{uuid.uuid4().hex}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW
    try:
      fd = os.open(tmp, flags, 0o644, dir_fd=self._fd)
    except OSError as e:
      raise StoreError(f"cannot write {name!r}: {e.strerror}") from e
    try:
      try:
        view, done = memoryview(data), 0
        while done < len(data):
          n = os.write(fd, view[done:])
          if n <= 0:
            raise OSError(errno.ENOSPC, "short write (disk full?)")
          done += n
        os.fsync(fd)
        size = os.fstat(fd).st_size
        if size != len(data):
          raise OSError(errno.EIO, f"wrote {size} of {len(data)} bytes")
      finally:
        os.close(fd)
    except OSError as e:
      self._discard(tmp)
      raise StoreError(f"cannot write {name!r}: {e.strerror or e}") from e
    return tmp

  def _discard(self, tmp: str) -> None:
    with contextlib.suppress(OSError):
      os.unlink(tmp, dir_fd=self._fd)

  def _check_replaceable(self, name: str) -> None:
    """Refuses a name held on disk by something `os.replace` cannot take over (a directory)."""
    try:
      st = os.stat(name, dir_fd=self._fd, follow_symlinks=False)
    except FileNotFoundError:
      return
    except OSError as e:
      raise StoreError(f"cannot write {name!r}: {e.strerror}") from e
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
      raise StoreError(f"cannot write {name!r}: an entry that is not a file holds its name")

  def _move_into_place(self, tmp: str, name: str) -> None:
    """Replaces `name` by the staged `tmp` (a link at `name` is replaced, not followed)."""
    try:
      self._check_replaceable(name)
      os.replace(tmp, name, src_dir_fd=self._fd, dst_dir_fd=self._fd)
    except (OSError, StoreError) as e:
      self._discard(tmp)
      if isinstance(e, StoreError):
        raise
      raise StoreError(f"cannot write {name!r}: {e.strerror}") from e
    self._sync_dir()

  def _unlink(self, name: str) -> None:
    try:
      os.unlink(name, dir_fd=self._fd)
    except FileNotFoundError:
      pass
    except OSError as e:
      raise StoreError(f"cannot delete {name!r}: {e.strerror}") from e

  def _strays(self, keep: Iterable[str]) -> list[str]:
    """Entries of the root that are neither in `keep` nor the marker (directories skipped)."""
    keep = set(keep)
    out = []
    for entry in os.listdir(self._fd):
      if entry in keep or entry == MARKER:
        continue
      try:
        st = os.stat(entry, dir_fd=self._fd, follow_symlinks=False)
      except FileNotFoundError:
        continue
      except OSError as e:
        raise StoreError(f"cannot inspect {entry!r} in {self._root}: {e.strerror}") from e
      if stat.S_ISDIR(st.st_mode):
        logging.warning("memory store %s: ignoring directory %r", self._root, entry)
        continue
      out.append(entry)
    return out

  def _commit(self, target: dict[str, str], *, sweep: bool = False,
              rewrite: bool = False) -> None:
    """Makes disk and mirror hold exactly `target`, all-or-nothing.

    Stages every changed file, moves them into place, then deletes what goes
    (the mirror's other files; with `sweep` every stray entry, and a marker
    that is no longer a regular file is rewritten). On a failure the files
    already moved are put back from the old mirror and the error is raised.
    """
    self._check_root()
    old = dict(self._files)
    changed = [n for n, c in target.items() if rewrite or old.get(n) != c]
    for name in changed:
      self._check_replaceable(name)
    staged: dict[str, str] = {}
    try:
      for name in changed:
        staged[name] = self._stage(name, target[name])
    except StoreError:
      for tmp in staged.values():
        self._discard(tmp)
      raise
    moved: list[str] = []
    try:
      for name in changed:
        self._move_into_place(staged.pop(name), name)
        moved.append(name)
      gone = [n for n in old if n not in target]
      if sweep:
        gone += [n for n in self._strays(target) if n not in gone]
      for name in gone:
        self._unlink(name)
        moved.append(name)  # a roll-back writes it back too
      if sweep and not self._marker_ok():
        self._unlink(MARKER)
        self._write_marker()
    except StoreError:
      for tmp in staged.values():
        self._discard(tmp)
      self._roll_back(old, moved)
      raise
    self._files = dict(target)
    self._total = sum(len(c.encode("utf-8")) for c in self._files.values())

  def _roll_back(self, old: Mapping[str, str], moved: Iterable[str]) -> None:
    """Best effort: the names in `moved` (replaced or deleted) get their old content back,
    or go when they had none (a stray entry deleted by a sweep is not restored)."""
    for name in moved:
      try:
        if name in old:
          self._move_into_place(self._stage(name, old[name]), name)
        else:
          self._unlink(name)
      except StoreError as e:
        logging.error("memory store %s: could not roll back %r: %s", self._root, name, e)


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
