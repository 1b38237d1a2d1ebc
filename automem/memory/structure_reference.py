"""The field reference a reviewer sees (`spec_reference`), generated from the schema.

Every line comes from the dataclass metadata of `structure_types` /
`MemoryStructure` (doc and example per field), the placeholder and text
tables of `structure_fields`, the observer and action-check libraries (their
parameter schemas) and the store's limit ranges; nothing is written twice,
so the reference cannot drift from what the validator enforces.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from automem.memory.action_checks import ACTION_CHECKS
from automem.memory.commands import ALL_OPS, command_reference
from automem.memory.observers import OBSERVERS
from automem.memory.store import LIMIT_RANGES
from automem.memory.structure_fields import (
  DYNAMIC_PLACEHOLDERS,
  FOLLOW_UP_PLACEHOLDERS,
  MAX_TEMPLATE_CHARS,
  STATIC_PLACEHOLDERS,
  TEXTS,
)
from automem.memory.structure_revise import BOOKKEEPING

_LIST_NOTE = {
    "files": "files[i]", "observers": "observers[i]", "pins": "pins[i]",
    "harness_files": "harness_files[i]", "action_checks": "action_checks[i]",
    "task_overrides": "task_overrides[i]", "modes": "modes[i]",
}


def _example(v: Any) -> str:
  text = json.dumps(v, ensure_ascii=False)
  return text if len(text) <= 70 else text[:67] + "..."


def field_rows(cls: type, prefix: str = "") -> list[tuple[str, str, Any]]:
  """(dotted path, doc, example) of every documented field of `cls`, nested specs expanded."""
  from automem.memory.structure import _TOP

  rows = []
  for f in dataclasses.fields(cls):
    meta = f.metadata
    if "doc" not in meta:
      continue
    path = f"{prefix}{f.name}"
    nested = _TOP.get(f.name) if not prefix else None
    if nested and nested[0] is not None and f.name != "limits":
      shown = _LIST_NOTE.get(f.name, path) if nested[1] else path
      rows.append((shown, meta["doc"], None))
      rows.extend(field_rows(nested[0], f"  {shown}."))
    else:
      rows.append((path, meta["doc"], meta["example"]))
  return rows


def spec_reference() -> str:
  """What a reviewer may change and within which bounds, as prompt text (for Loop 1)."""
  from automem.memory.structure import MemoryStructure

  ph = lambda d: " ".join("{" + k + "}" for k in d)  # noqa: E731
  out = ['MemoryStructure fields (revise with dotted paths, e.g. "plan.max_iterations", '
         '"files.2.content", "pins.0.lines"; append with index = length; remove a list '
         'element with null). Each line: path: meaning (e.g. example).']
  for path, doc, example in field_rows(MemoryStructure):
    if path in BOOKKEEPING:  # set by revise
      continue
    if path == "limits":
      example = None
    out.append(f"  {path}: {doc}" + ("" if example is None else f" (e.g. {_example(example)})"))
  out.append("  limits.* (store quotas): " + ", ".join(
      f"{k} {lo}..{hi}" for k, (lo, hi) in LIMIT_RANGES.items()))
  out.append(f"Placeholders: system {ph(STATIC_PLACEHOLDERS)}; user {ph(DYNAMIC_PLACEHOLDERS)}; "
             f"follow_up {ph(FOLLOW_UP_PLACEHOLDERS)}. Templates max {MAX_TEMPLATE_CHARS} chars; "
             "literal braces {{ }}.")
  out.append("texts (key: placeholders; default):")
  out.extend(f"  texts.{k}: {' '.join('{' + p + '}' for p in ps) or '-'}; {_example(default)}"
             for k, (default, ps) in TEXTS.items())
  out.append("Observers (name: what; params):")
  for name, d in OBSERVERS.items():
    out.append(f"  {name}: {d.doc}")
    out.extend(f"    {k}: {p.describe()}" for k, p in d.params.items())
  out.append("Action checks (kind: what; params):")
  for name, d in ACTION_CHECKS.items():
    out.append(f"  {name}: {d.doc}")
    out.extend(f"    {k}: {p.describe()}" for k, p in d.params.items())
  out.append(f"Commands ({' '.join(ALL_OPS)}):")
  out.append(command_reference(ALL_OPS))
  return "\n".join(out)
