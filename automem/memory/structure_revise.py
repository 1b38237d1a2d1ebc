"""Revisions of a MemoryStructure: dotted-path change sets and the readable diff.

A revision is data: `{"plan.max_iterations": 3, "files.2.content": "...",
"pins.0": {...}}` applied to the JSON form, then rebuilt and validated, so
every field the structure has is reachable by Loop 1 and shows in
`structure_diff`.
"""

from __future__ import annotations

import copy
import difflib
import json
from collections.abc import Mapping
from typing import Any

from automem.memory.structure_fields import StructureError

# Fields set by `revise` itself, never by a change set.
BOOKKEEPING = ("version", "parent", "changes", "note", "schema")
# Top-level lists whose elements a change may remove with `None`.
REMOVABLE = ("files", "observers", "pins", "harness_files", "action_checks", "task_overrides",
             "modes")
_MISSING = object()


def apply_changes(data: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
  """`data` (a structure's JSON form, copied) with the dotted-path `changes` applied.

  A path ending in a list index one past the end appends; `None` for an
  element of a `REMOVABLE` list removes it (applied last, highest index first);
  a path through an object-valued field (texts, action_aliases, params,
  changes) may add a key.
  """
  data = copy.deepcopy(data)
  removals = []
  for path, value in changes.items():
    parts = str(path).split(".")
    if parts[0] in BOOKKEEPING:
      raise StructureError(str(path), "set by revise, not by changes")
    if value is None and len(parts) == 2 and parts[0] in REMOVABLE:
      if parts[0] not in data:
        raise StructureError(str(path), f"unknown field {parts[0]!r}")
      removals.append((parts[0], _index(data[parts[0]], parts[1], str(path), allow_end=False)))
      continue
    _set_path(data, parts, copy.deepcopy(value), str(path))
  for key, idx in sorted(removals, key=lambda r: -r[1]):
    del data[key][idx]
  return data


# Object-valued fields whose keys are data (a change may add one).
_OPEN_OBJECTS = ("params", "texts", "action_aliases", "changes", "materials", "nearby", "moves",
                 "needs")


def _index(container: list[Any], part: str, path: str, allow_end: bool) -> int:
  try:
    idx = int(part)
  except ValueError:
    raise StructureError(path, f"{part!r} is not a list index") from None
  if not 0 <= idx < len(container) + (1 if allow_end else 0):
    raise StructureError(path, f"index {idx} out of range (0..{len(container) - 1})")
  return idx


def _set_path(data: Any, parts: list[str], value: Any, path: str) -> None:
  node = data
  for k, part in enumerate(parts):
    last = k == len(parts) - 1
    if isinstance(node, list):
      idx = _index(node, part, path, allow_end=last)
      if last:
        if idx == len(node):
          node.append(value)
        else:
          node[idx] = value
        return
      node = node[idx]
    elif isinstance(node, dict):
      open_object = k > 0 and parts[k - 1] in _OPEN_OBJECTS
      if part not in node and not (last and open_object):
        raise StructureError(path, f"unknown field {part!r}")
      if last:
        node[part] = value
        return
      node = node[part]
    else:
      raise StructureError(path, f"cannot descend into {type(node).__name__}")


def diff_dicts(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
  """A human-readable diff of two structures' JSON forms (bookkeeping fields ignored)."""
  fa, fb = _flatten(a), _flatten(b)
  rows = []
  for key in sorted(set(fa) | set(fb), key=_path_sort_key):
    if key.split(".")[0] in BOOKKEEPING:
      continue
    va, vb = fa.get(key, _MISSING), fb.get(key, _MISSING)
    if va == vb:
      continue
    if va is _MISSING:
      rows.append(f"+ {key} = {_short(vb)}")
    elif vb is _MISSING:
      rows.append(f"- {key} (was {_short(va)})")
    elif isinstance(va, str) and isinstance(vb, str) and ("\n" in va or "\n" in vb or len(va) > 80):
      body = "\n".join(difflib.unified_diff(va.splitlines(), vb.splitlines(), lineterm="", n=1))
      body = "\n".join(body.splitlines()[2:])  # drop the ---/+++ header
      rows.append(f"~ {key}:\n{body}")
    else:
      rows.append(f"~ {key}: {_short(va)} -> {_short(vb)}")
  return "\n".join(rows) or "(no changes)"


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
  out: dict[str, Any] = {}
  if isinstance(value, dict):
    for k, v in value.items():
      out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    if not value and prefix:
      out[prefix] = {}
  elif isinstance(value, list) and not all(isinstance(v, str) for v in value):
    names = [v.get("name", v.get("file")) if isinstance(v, dict) else None for v in value]
    by_name = all(isinstance(n, str) for n in names) and len(set(names)) == len(names)
    for i, v in enumerate(value):
      # Files and observers are keyed by name, so removing one does not shift the rest.
      out.update(_flatten(v, f"{prefix}[{names[i]}]" if by_name else f"{prefix}.{i}"))
    if not value:
      out[prefix] = []
  else:
    out[prefix] = value
  return out


def _path_sort_key(path: str) -> list[Any]:
  return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in path.split(".")]


def _short(v: Any) -> str:
  text = json.dumps(v, ensure_ascii=False)
  return text if len(text) <= 120 else text[:117] + "..."
