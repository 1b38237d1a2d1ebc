"""Memory file names: one flat directory, a small ASCII charset, no tricks.

A valid name is a single path component of 1..`max_len` characters from
`[A-Za-z0-9._-]`, starting with a letter or digit, with no `..`. Model
output is first NFKC-normalised (full-width letters become ASCII), stripped of
surrounding whitespace and quotes; anything still outside the charset is
refused rather than rewritten, so a name never silently changes meaning.
Two names that differ only in case are the same file (`key` gives the
case-folded form used for collision checks).
"""

from __future__ import annotations

import re
import unicodedata

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
DEFAULT_MAX_NAME_LEN = 64


class InvalidName(ValueError):
  """A file name that is not allowed; the message says why."""


def normalize_name(raw: str, max_len: int = DEFAULT_MAX_NAME_LEN) -> str:
  """Returns the canonical form of a model-written file name.

  Raises:
    InvalidName: the name is empty, too long, contains a separator, `..`,
      control characters or characters outside `[A-Za-z0-9._-]`.
  """
  if not isinstance(raw, str):
    raise InvalidName("a file name must be text")
  if len(raw) > 4 * max_len:
    raise InvalidName(f"file name too long ({len(raw)} characters, max {max_len})")
  name = unicodedata.normalize("NFKC", raw).strip()
  if len(name) >= 2 and name[0] == name[-1] and name[0] in "\"'`":
    name = name[1:-1].strip()
  if not name:
    raise InvalidName("empty file name")
  if len(name) > max_len:
    raise InvalidName(f"file name too long ({len(name)} characters, max {max_len})")
  if "/" in name or "\\" in name:
    raise InvalidName(f"{_show(name)}: no directories, use a plain name like notes.txt")
  if any(unicodedata.category(c)[0] == "C" for c in name):
    raise InvalidName(f"{_show(name)}: control or invisible characters are not allowed")
  if ".." in name:
    raise InvalidName(f"{_show(name)}: '..' is not allowed in a file name")
  if not NAME_RE.fullmatch(name):
    raise InvalidName(
        f"{_show(name)}: use letters, digits, '.', '_' and '-' only, "
        "starting with a letter or digit")
  return name


def name_key(name: str) -> str:
  """The case-folded key under which two names collide."""
  return name.casefold()


def is_valid_name(raw: str, max_len: int = DEFAULT_MAX_NAME_LEN) -> bool:
  try:
    return normalize_name(raw, max_len) == raw
  except InvalidName:
    return False


def _show(name: str) -> str:
  return ascii(name[:80])
