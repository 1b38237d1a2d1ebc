"""What a revision must respect: a structural change, and memory left to the model.

`check_revision(parent, child, changes, rules)` returns the violations
(empty: allowed). Rules are on by default and configurable:

- structural: changing only wording (prompt templates, game rules, file
  descriptions and schemas) is not a revision; at least one other field
  must change (phases' ops and limits, files, store limits, observers,
  fallback, history, ...).
- model-owned memory: a revision may not pre-fill memory files with notes
  (new or changed non-empty initial `content`), read-only or not, unless
  the file is declared harness-maintained (`Rules.harness_files`);
  read-only reference text is let through only with
  `Rules.allow_reference_files` (off by default: such a file is the harness
  writing strategy notes for the model all the same). It may not add
  `harness_files` entries (files the harness rewrites each step) for a file
  the parent did not maintain, unless declared. And the LOG phase must keep
  at least one write op, so what gets stored stays the model's decision.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from automem.memory import WRITE_OPS, MemoryStructure

_WORDING = re.compile(r"^(game_rules|(log|plan)\.(system|user|follow_up)|files\.\d+\.(description|"
                      r"schema))$")
_BOOKKEEPING = ("version", "parent", "note", "changes", "schema")


@dataclasses.dataclass(frozen=True)
class Rules:
  require_structural: bool = True
  model_owned_memory: bool = True
  harness_files: tuple[str, ...] = ()  # files the user declares harness-maintained
  allow_reference_files: bool = False  # may a revision pre-fill read-only files?


DEFAULT_RULES = Rules()


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(value, Mapping):
    out: dict[str, Any] = {}
    for k, v in value.items():
      out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out
  if isinstance(value, list) and prefix.split(".")[-1] in ("files", "observers"):
    out = {}
    for i, v in enumerate(value):
      out.update(_flat(v, f"{prefix}.{i}"))
    return out if value else {prefix: []}
  return {prefix: value}


def changed_paths(a: MemoryStructure, b: MemoryStructure) -> list[str]:
  """Leaf paths whose value differs between two structures (bookkeeping ignored)."""
  fa, fb = _flat(a.to_dict()), _flat(b.to_dict())
  return sorted(k for k in set(fa) | set(fb)
                if k.split(".")[0] not in _BOOKKEEPING and fa.get(k, None) != fb.get(k, None))


def is_structural(paths: list[str]) -> bool:
  return any(not _WORDING.match(p) for p in paths)


def check_revision(parent: MemoryStructure, child: MemoryStructure,
                   rules: Rules = DEFAULT_RULES) -> list[str]:
  """The rule violations of `child` as a revision of `parent` (empty: allowed)."""
  problems = []
  paths = changed_paths(parent, child)
  if not paths:
    problems.append("the revision changes nothing")
  elif rules.require_structural and not is_structural(paths):
    problems.append("the revision changes only wording (templates, game rules, file "
                    "descriptions/schemas); change the structure too: ops, limits, files, "
                    "observers, history, fallback, ...")
  if rules.model_owned_memory:
    before = {f.name: f.content for f in parent.files}
    allowed = {n.lower() for n in rules.harness_files}
    for i, f in enumerate(child.files):
      exempt = f.name.lower() in allowed or (f.read_only and rules.allow_reference_files)
      if f.content and f.content != before.get(f.name, "") and not exempt:
        problems.append(f"files.{i}.content: a revision may not write notes into {f.name!r} "
                        "for the model, read-only or not (only declared harness-maintained "
                        "files may be pre-filled: rules.harness_files)")
    maintained = {h.file.lower() for h in parent.harness_files} | allowed
    for i, h in enumerate(child.harness_files):
      if h.file.lower() not in maintained:
        problems.append(f"harness_files.{i}: a revision may not add a harness-maintained file "
                        f"({h.file!r} from {h.source!r}); only the files the rules declare "
                        "(rules.harness_files) or the parent maintained")
    if not set(child.log.allowed_ops) & set(WRITE_OPS):
      problems.append("log.allowed_ops: the LOG phase must keep at least one write op "
                      "(memory stays the model's decision)")
  problems += _unmatched_overrides(child)
  return problems


def _unmatched_overrides(child: MemoryStructure) -> list[str]:
  """A per-task override whose glob matches no task of the game would be silently unused
  (a reviewer's typo such as a lower-case 'minihack-boxoban-*')."""
  if not child.task_overrides:
    return []
  from automem.rollout.evaluate import check_overrides
  from automem.utils.errors import InputError

  try:
    check_overrides(child.game, child, "task_overrides")
  except InputError as e:
    return [str(e).removeprefix("task_overrides: ")]
  return []
