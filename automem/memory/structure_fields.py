"""The value kinds, placeholders, caps and agent texts a MemoryStructure is built from.

One table describes each kind of value (`check_value`), so the validation of
structure fields, observer parameters and action-check parameters is the
same code, and the reviewer's field reference (`spec_reference`) prints the
same bounds the validator enforces.
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Mapping
from typing import Any

SCHEMA = "automem.memory_structure/1"
PHASES = ("log", "plan")

MAX_TEMPLATE_CHARS = 12_000
MAX_RULES_CHARS = 24_000
MAX_DESCRIPTION_CHARS = 300
MAX_SCHEMA_CHARS = 2_000
MAX_TEXT_CHARS = 2_000  # one agent text (texts.*)
MAX_TABLE_ENTRIES = 200  # rows of a table or list parameter
ITERATION_RANGE = (1, 20)
COMMANDS_PER_TURN_RANGE = (1, 64)
HISTORY_RANGE = (0, 200)

STATIC_PLACEHOLDERS: dict[str, str] = {
    "game": "the game's name",
    "task": "the task id of the episode (e.g. MiniHack-Corridor-R3-v0)",
    "game_rules": "the structure's game_rules text",
    "actions": "the game's action names, one per line",
    "commands": "the command reference of the phase's allowed ops",
    "fallback_action": "the action taken when none is committed",
}
DYNAMIC_PLACEHOLDERS: dict[str, str] = {
    "file_index": "the memory file index (name, lines, bytes, description)",
    "history": "the last history_length steps: action and outcome per step",
    "pinned": "the pinned file views of the phase (see `pins`)",
    "step": "the current step number",
    "helpers": "the text of the enabled helper observers for this phase",
    "last_action": "the action taken at the previous step",
    "last_outcome": "what the previous action did (feedback, reward, changes)",
    "observation": "the newest observation text",
}
FOLLOW_UP_PLACEHOLDERS: dict[str, str] = {
    "results": "the results of the commands of the previous turn",
    "file_index": "the memory file index after those commands",
    "helpers": "the helper observer text",
    "step": "the current step number",
}
# Rank of each dynamic placeholder in a user template; lower ranks come first. {pinned}
# changes only when a pinned file does, so it sits after the history, before per-step text.
CACHE_RANK = {"file_index": 0, "history": 1, "pinned": 2}
PER_STEP_RANK = 3

# Every text the agent shows the model besides the templates: key -> (default, placeholders).
TEXTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "commit": ("Now commit the game action for this step. Reply with exactly one "
               "<|ACTION|>name<|END|> using one of the action names listed in the instructions.",
               ()),
    "log_limit": ("(The LOG phase is over: {limit} turn limit reached.)", ("limit",)),
    "prompt_cut": ("(This phase is over: the prompt reached {limit} characters.)", ("limit",)),
    "no_action": ("No action committed yet: end with <|ACTION|>name<|END|>.", ()),
    "unknown_action": ("[ERROR ACTION] unknown action {action!r}; choose one of: {actions}",
                       ("action", "actions")),
    "action_rejected": ("[CHECK] '{action}' was not played: {reason} Choose again "
                        "({left} more rejection(s) this step, then it goes through).",
                        ("action", "reason", "left")),
    "action_repaired": ("[ACTION] '{written}' read as '{action}'.", ("written", "action")),
    "see_above": ("(the current observation is shown above)", ()),
    "see_system": ("(see the system prompt)", ()),
    "history_above": ("(shown above)", ()),
    "no_history": ("(no steps yet)", ()),
    "no_files": ("(no files)", ()),
    "history_line": ("step {step}: {action} -> {outcome}", ("step", "action", "outcome")),
    "outcome": ("reward {reward}", ("reward",)),
    "outcome_feedback": ("; {feedback}", ("feedback",)),
    "outcome_end": ("; the episode ended ({reason})", ("reason",)),
    "outcome_fallback": (" (no valid action was committed: the fallback was played)", ()),
    "first_outcome": ("The episode has just started; no action has been taken yet.", ()),
    "no_last_action": ("none", ()),
    "log_header": ("=== In the LOG phase ===", ()),
    "plan_header": ("=== In the PLAN phase ===", ()),
    "paper_dynamic": ("Memory files:\n{file_index}\n\nCurrent observation:\n{observation}",
                      ("file_index", "observation")),
    "pin_header": ("PINNED: {file} ({view})", ("file", "view")),
    "pin_missing": ("(the file {file} does not exist now)", ("file",)),
    "size_warning": ("Note: {file} has {lines} lines / {bytes} bytes (over {limit}); "
                     "compact it: keep what you still need, drop the rest.",
                     ("file", "lines", "bytes", "limit")),
    "read_only": (" (read-only)", ()),
    "trimmed": ("(left out to keep the prompt short)", ()),
}


@dataclasses.dataclass(frozen=True)
class Param:
  """One typed value of the schema: a parameter of an observer or a check.

  Attributes:
    kind: "int" | "float" | "bool" | "str" | "list" (of one-line strings) |
      "table" (string keys; values numbers, strings, lists of strings or tables).
    default: the value when not given.
    doc: what it means (shown to the reviewer).
    lo, hi: bounds of a number, or of a list/table's length.
  """

  kind: str
  default: Any
  doc: str
  lo: float | None = None
  hi: float | None = None

  def describe(self) -> str:
    bounds = f", {self.lo:g}..{self.hi:g}" if self.lo is not None and self.hi is not None else ""
    return f"{self.kind}{bounds}, default {_short_json(self.default)}: {self.doc}"


def is_int(v: Any) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
  return isinstance(v, int | float) and not isinstance(v, bool)


def _is_line(v: Any, cap: int = 200) -> bool:
  return isinstance(v, str) and "\n" not in v and len(v) <= cap


def _table_ok(value: Any, depth: int = 0) -> str | None:
  if not isinstance(value, Mapping):
    return "must be a table (an object)"
  if len(value) > MAX_TABLE_ENTRIES:
    return f"has {len(value)} rows, at most {MAX_TABLE_ENTRIES}"
  for k, v in value.items():
    if not _is_line(k, 100) or not k:
      return f"key {k!r} must be a non-empty one-line string"
    if is_number(v) or _is_line(v, 400):
      continue
    if isinstance(v, list | tuple) and all(_is_line(x) for x in v):
      continue
    if isinstance(v, Mapping) and depth < 2:
      bad = _table_ok(v, depth + 1)
      if bad:
        return f"[{k}] {bad}"
      continue
    return f"[{k}] must be a number, a line, a list of lines or a table"
  return None


def check_value(p: Param, value: Any) -> str | None:
  """Why `value` does not fit `p`, or None."""
  kind = p.kind
  if kind == "bool":
    return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
  if kind in ("int", "float"):
    ok = is_int(value) if kind == "int" else is_number(value)
    if not ok:
      return f"must be {kind}, got {value!r}"
    if p.lo is not None and p.hi is not None and not p.lo <= value <= p.hi:
      return f"must be in [{p.lo:g}, {p.hi:g}], got {value}"
    return None
  if kind == "str":
    return None if _is_line(value, 400) else f"must be one line of text, got {value!r}"
  if kind == "list":
    if not isinstance(value, list | tuple) or not all(_is_line(x) for x in value):
      return "must be a list of one-line strings"
    if p.hi is not None and len(value) > p.hi:
      return f"has {len(value)} entries, at most {p.hi:g}"
    return None
  if kind == "table":
    return _table_ok(value)
  raise ValueError(f"unknown parameter kind {kind!r}")


def check_params(schema: Mapping[str, Param], params: Any, where: str) -> list[tuple[str, str]]:
  """Problems of a params object against its schema, as (field, message)."""
  if not isinstance(params, Mapping):
    return [(where, "must be an object")]
  out = []
  for key, value in params.items():
    if key not in schema:
      out.append((f"{where}.{key}", f"unknown parameter; known: {', '.join(schema) or 'none'}"))
      continue
    bad = check_value(schema[key], value)
    if bad:
      out.append((f"{where}.{key}", bad))
  return out


class StructureError(ValueError):
  """A structure that is not valid; `field` names the offending field."""

  def __init__(self, field: str, message: str):
    super().__init__(f"{field}: {message}")
    self.field = field
    self.message = message


def placeholders(template: str, field: str) -> list[str]:
  """Placeholder names in order; raises StructureError on malformed templates."""
  names: list[str] = []
  try:
    parsed = list(string.Formatter().parse(template))
  except ValueError as e:
    raise StructureError(
        field, f"malformed template ({e}); write literal braces as {{{{ }}}}") from None
  for _literal, name, spec, conv in parsed:
    if name is None:
      continue
    if not name.isidentifier():
      raise StructureError(field, f"placeholder {{{name}}} must be a plain name")
    if (spec or conv) and not (conv == "r" and not spec):
      raise StructureError(
          field, f"placeholder {{{name}}} must not have a format spec or conversion")
    if name not in names:
      names.append(name)
  return names


def fill(template: str, values: Mapping[str, Any], field: str) -> str:
  used = placeholders(template, field)
  missing = [p for p in used if p not in values]
  if missing:
    raise KeyError(f"{field}: no value for " + ", ".join("{" + p + "}" for p in missing))
  return template.format_map({p: "" if values[p] is None else values[p] for p in used})


def _short_json(v: Any) -> str:
  import json

  text = json.dumps(v, ensure_ascii=False)
  return text if len(text) <= 60 else text[:57] + "..."
