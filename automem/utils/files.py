"""Temp files of killed runs: `<name>.tmp<pid>` next to what a run writes atomically.

A run writes `config.json`, metrics files and the tiny model build to
`<path>.tmp<pid>` and renames it into place; a run killed between the two
leaves the temp behind. `sweep_stale_tmp` removes those whose process is gone.
"""

from __future__ import annotations

import os
import re
import shutil

from absl import logging

_TMP = re.compile(r".+\.tmp(\d+)$")


def tmp_path(path: str) -> str:
  """The temp name to write `path` under before renaming it into place: `<path>.tmp<pid>`,
  so `sweep_stale_tmp` knows a killed writer's leftover from a live one's."""
  return f"{path}.tmp{os.getpid()}"


def _alive(pid: int) -> bool:
  if pid == os.getpid():
    return True
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # someone else's live process
  return True


def sweep_stale_tmp(directory: str | os.PathLike[str]) -> list[str]:
  """Removes `*.tmp<pid>` files and folders in `directory` whose process is gone.

  Returns:
    The names removed (a missing directory gives an empty list).
  """
  removed = []
  try:
    entries = list(os.scandir(directory))
  except FileNotFoundError:
    return removed
  for entry in entries:
    m = _TMP.fullmatch(entry.name)
    if m is None or _alive(int(m.group(1))):
      continue
    try:
      if entry.is_dir(follow_symlinks=False):
        shutil.rmtree(entry.path)
      else:
        os.unlink(entry.path)
    except OSError as e:
      logging.warning("could not remove the stale temp %s: %s", entry.path, e)
      continue
    removed.append(entry.name)
  if removed:
    logging.info("removed %d stale temp file(s) of killed runs in %s: %s", len(removed),
                 directory, ", ".join(sorted(removed)))
  return removed
