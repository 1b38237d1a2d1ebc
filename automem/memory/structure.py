"""MemoryStructure: the declarative spec of the memory skill that Loop 1 revises.

A structure holds everything a reviewer may change, as plain validated data
(JSON in, JSON out); a validation error names the offending field
(`StructureError.field`) and nothing is half-applied. The parts:

- the prompts: per phase (LOG, PLAN) a static `system`, a per-step `user`
  and a `follow_up` template, plus every other text the agent shows the model
  (`texts`: the commit message, cut-off notes, error wrappers, ...);
- the memory files (`files`, with retention `keep_last`/`keep_header`),
  pinned file views (`pins`, shown at {pinned}), harness-maintained read-only
  files (`harness_files`) and soft size warnings (`size_warning`);
- the command vocabulary and limits of each phase, and the store limits;
- helper observers (`observers`, the library in `automem.memory.observers`),
  action checks (`action_checks`, `max_rejections`) and action repair
  (`action_aliases`);
- per-task overrides (`task_overrides`, a revision for tasks matching a glob),
  conditional modes (`modes`: another user template or op set while an
  observer fires) and the hook order (`hooks`).

Prompt layout (prefix caching): `system` takes only static placeholders
({game} {task} {game_rules} {actions} {commands} {fallback_action}); `user`
takes {file_index}, then {history}, then {pinned}, then the per-step ones
({step} {helpers} {last_action} {last_outcome} {observation}); `follow_up`
needs {results}. Literal braces are written `{{` and `}}`.

Step order (the agent): env step -> hooks at "step_start" (harness files,
then retention) -> LOG turns -> hooks at "after_log" -> PLAN turns (action
checks may re-prompt) -> the action. Observers are computed whenever a
prompt is built, from the views up to the last env step.

Revisions: `structure.revise(changes, note)` applies dotted-path changes
and returns a new validated structure with `version + 1`, `parent` and a
readable diff in `changes`. The field reference the reviewer sees is
`spec_reference()`, generated from the same dataclasses.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

from automem.memory.commands import command_reference
from automem.memory.names import name_key
from automem.memory.store import StoreLimits
from automem.memory.structure_fields import (
    PHASES,
    SCHEMA,
    TEXTS,
    StructureError,
    fill,
    placeholders,
)
from automem.memory.structure_revise import apply_changes, diff_dicts
from automem.memory.structure_types import (
    ActionCheckSpec,
    FileSpec,
    HarnessFileSpec,
    HookSpec,
    ModeSpec,
    ObserverSpec,
    PhaseSpec,
    PinSpec,
    SizeWarning,
    TaskOverride,
    meta,
    spec_field,
)
from automem.memory.structure_validate import check_structure, unmatched_overrides


def default_texts() -> dict[str, str]:
  return {k: v for k, (v, _) in TEXTS.items()}


@dataclasses.dataclass(frozen=True)
class MemoryStructure:
  """The complete, versioned memory structure for one game (see the module docstring)."""

  game: str = spec_field("crafter, minihack, nethack (or another registered game)", "crafter")
  game_rules: str = spec_field("game knowledge shown as {game_rules}", "Wood comes from trees.")
  log: PhaseSpec = dataclasses.field(
      metadata=meta("the LOG phase (record what happened; ends with DONE)", {}))
  plan: PhaseSpec = dataclasses.field(
      metadata=meta("the PLAN phase (consult memory; ends with ACTION)", {}))
  files: tuple[FileSpec, ...] = spec_field("the initial memory files", [], ())
  limits: StoreLimits = dataclasses.field(default_factory=StoreLimits,
                                          metadata=meta("store quotas", {}))
  observers: tuple[ObserverSpec, ...] = spec_field("enabled helper observers", [], ())
  texts: Mapping[str, str] = spec_field(
      "every other text the agent shows the model, by key", {"no_action": "Commit an action."},
      factory=default_texts)
  pins: tuple[PinSpec, ...] = spec_field("file views shown at {pinned}", [], ())
  harness_files: tuple[HarnessFileSpec, ...] = spec_field(
      "read-only files the harness rewrites from an observer", [], ())
  size_warning: SizeWarning = dataclasses.field(
      default_factory=SizeWarning, metadata=meta("soft warnings when a file grows", {}))
  action_checks: tuple[ActionCheckSpec, ...] = spec_field(
      "checks that may reject a committed action and re-prompt PLAN", [], ())
  max_rejections: int = spec_field("rejections per step before an action goes through (0..10)",
                                   2, 2)
  action_aliases: Mapping[str, str] = spec_field(
      "what the model writes -> action name (after name normalisation fails)",
      {"go left": "move_west"}, factory=dict)
  task_overrides: tuple[TaskOverride, ...] = spec_field(
      "changes applied for tasks matching a glob", [], ())
  modes: tuple[ModeSpec, ...] = spec_field("alternative templates/op sets while an observer "
                                           "fires (the first active mode wins)", [], ())
  hooks: HookSpec = dataclasses.field(
      default_factory=HookSpec, metadata=meta("when harness files and retention run", {}))
  fallback_action: str = spec_field("the action played when PLAN commits none", "noop", "noop")
  fallback_alternatives: tuple[str, ...] = spec_field(
      "tried in order when a task does not offer fallback_action", ["wait"], ())
  history_length: int = spec_field("steps of action/outcome history in {history} (0..200)", 8, 8)
  log_first_step: bool = spec_field("run LOG before the first action too", False, False)
  map_file: str | None = spec_field("the file UPSERT_MAP writes to (null: no UPSERT_MAP)",
                                    "dungeon_map.txt", None)
  upsert_separator: str = spec_field("between key and value of UPSERT lines", ": ", ": ")
  version: int = spec_field("revision number (set by revise)", 0, 0)
  parent: int | None = spec_field("the version this one was revised from", None, None)
  note: str = spec_field("why this revision was made", "", "")
  changes: str = spec_field("readable diff against the parent (set by revise)", "", "")
  schema: str = spec_field("format id of the JSON form", SCHEMA, SCHEMA)

  def __post_init__(self) -> None:
    problems = check_structure(self)
    if problems:
      raise StructureError(*problems[0])

  # --- access ---------------------------------------------------------------------------

  def phase(self, name: str) -> PhaseSpec:
    key = str(name).lower()
    if key not in PHASES:
      raise ValueError(f"unknown phase {name!r}; expected one of {PHASES}")
    return getattr(self, key)

  def observers_for(self, phase: str) -> tuple[ObserverSpec, ...]:
    return tuple(o for o in self.observers if phase.lower() in o.phases)

  def pins_for(self, phase: str) -> tuple[PinSpec, ...]:
    return tuple(p for p in self.pins if phase.lower() in p.phases)

  def file(self, name: str) -> FileSpec | None:
    for f in self.files:
      if isinstance(f, FileSpec) and name_key(f.name) == name_key(name):
        return f
    return None

  def resolve_fallback(self, action_names: Sequence[str]) -> str | None:
    """The offered action to fall back on: `fallback_action`, else the first offered
    alternative (matched case-insensitively, `_`/`-` as spaces), else None."""
    offered = {_norm_action(a): a for a in action_names}
    for want in (self.fallback_action, *self.fallback_alternatives):
      if _norm_action(want) in offered:
        return offered[_norm_action(want)]
    return None

  def repair_action(self, written: str, action_names: Sequence[str]) -> str | None:
    """The offered action an alias maps `written` to, or None."""
    offered = {_norm_action(a): a for a in action_names}
    for alias, target in self.action_aliases.items():
      if _norm_action(alias) == _norm_action(written):
        return offered.get(_norm_action(target))
    return None

  @property
  def label(self) -> str:
    return f"{self.game}-v{self.version}"

  # --- prompts --------------------------------------------------------------------------

  def text(self, key: str, **values: Any) -> str:
    """One of the agent's texts (`texts`), filled."""
    return fill(self.texts[key], values, f"texts.{key}")

  def system_prompt(self, phase: str, *, actions: Sequence[str] | str, task: str = "") -> str:
    """The phase's fixed system text with every static placeholder filled."""
    spec = self.phase(phase)
    acts = actions if isinstance(actions, str) else "\n".join(actions)
    values = {"game": _DISPLAY_NAMES.get(self.game, self.game), "task": task,
              "game_rules": self.game_rules, "actions": acts,
              "commands": command_reference(spec.allowed_ops),
              "fallback_action": self.fallback_action}
    return fill(spec.system, values, f"{phase}.system")

  def system_text(self, actions: Sequence[str], task: str = "") -> str:
    """The fixed instructions of both phases in one system message.

    The phases' system templates usually share a long head (game knowledge, actions) and
    differ in their commands and routine; the shared paragraphs are written once, then
    the LOG part, then the PLAN part.
    """
    log = self.system_prompt("log", actions=actions, task=task).strip().split("\n")
    plan = self.system_prompt("plan", actions=actions, task=task).strip().split("\n")
    if log == plan:
      return "\n".join(log)
    n = 0
    while n < min(len(log), len(plan)) and log[n] == plan[n]:
      n += 1
    while n > 0 and log[n - 1].strip():  # split at a paragraph break
      n -= 1
    head = "\n".join(log[:n]).strip()
    log_tail, plan_tail = "\n".join(log[n:]).strip(), "\n".join(plan[n:]).strip()
    parts = [head, f"{self.text('log_header')}\n{log_tail}",
             f"{self.text('plan_header')}\n{plan_tail}"]
    return "\n\n".join(p for p in parts if p.strip())

  def user_prompt(self, phase: str, **values: Any) -> str:
    """The phase's first message at a step; every placeholder it uses must be given."""
    values.setdefault("pinned", "")
    return fill(self.phase(phase).user, values, f"{phase}.user")

  def follow_up_prompt(self, phase: str, **values: Any) -> str:
    return fill(self.phase(phase).follow_up, values, f"{phase}.follow_up")

  def placeholders(self, phase: str, part: str) -> list[str]:
    """The placeholders a template uses, in order of first appearance."""
    return placeholders(getattr(self.phase(phase), part), f"{phase}.{part}")

  # --- derived structures ---------------------------------------------------------------------

  def check(self) -> list[tuple[str, str]]:
    """Every problem as (field, message); empty for a valid structure."""
    return check_structure(self)

  def apply_changes(self, changes: Mapping[str, Any]) -> MemoryStructure:
    """This structure with dotted-path `changes` applied and validated (same version, no
    task overrides: the result is what one task plays)."""
    data = apply_changes(self.to_dict(), changes)
    data["task_overrides"] = []
    return MemoryStructure.from_dict(data)

  def for_task(self, task: str) -> MemoryStructure:
    """The structure a task plays: every override whose glob matches `task`, in order."""
    changes: dict[str, Any] = {}
    matched = []
    for o in self.task_overrides:
      if fnmatch.fnmatchcase(task, o.match):
        changes.update(o.changes)
        matched.append(o.match)
    if not matched:
      return self
    new = self.apply_changes(changes)
    note = f"{self.note}\n[task {task}: overrides {', '.join(matched)}]".strip()
    return dataclasses.replace(new, note=note, changes=structure_diff(self, new))

  def check_tasks(self, task_ids: Sequence[str]) -> None:
    """Raises StructureError when an override's glob matches none of `task_ids`."""
    problems = unmatched_overrides(self, list(task_ids))
    if problems:
      raise StructureError(*problems[0])

  def with_mode(self, name: str) -> MemoryStructure:
    """The structure while mode `name` is on: its phases' user templates / ops replaced."""
    mode = next((m for m in self.modes if m.name == name), None)
    if mode is None:
      raise ValueError(f"no mode {name!r}; modes: {[m.name for m in self.modes]}")
    changes: dict[str, Any] = {}
    for phase in mode.phases:
      if mode.user:
        changes[f"{phase}.user"] = mode.user
      if mode.allowed_ops:
        changes[f"{phase}.allowed_ops"] = list(mode.allowed_ops)
    return self.apply_changes(changes)

  # --- serialisation --------------------------------------------------------------------

  def to_dict(self) -> dict[str, Any]:
    return _jsonable(dataclasses.asdict(self))

  def to_json(self, indent: int | None = 2) -> str:
    return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False) + "\n"

  @classmethod
  def from_dict(cls, data: Mapping[str, Any]) -> MemoryStructure:
    """Builds and validates a structure; unknown or mistyped fields are named in the error."""
    if not isinstance(data, Mapping):
      raise StructureError("<root>", "a structure must be a JSON object")
    kwargs = _build(cls, data, "", _TOP)
    for p in PHASES:
      if p not in kwargs:
        raise StructureError(p, "missing")
    texts = default_texts()
    texts.update(kwargs.get("texts") or {})
    kwargs["texts"] = texts
    try:
      return cls(**kwargs)
    except TypeError as e:
      raise StructureError("<root>", str(e)) from None

  @classmethod
  def from_json(cls, text: str) -> MemoryStructure:
    try:
      data = json.loads(text)
    except json.JSONDecodeError as e:
      raise StructureError("<json>", f"not valid JSON: {e}") from None
    return cls.from_dict(data)

  def save(self, path: str | os.PathLike[str]) -> None:
    """Writes the JSON form atomically."""
    path = os.fspath(path)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(self.to_json())
    os.replace(tmp, path)

  @classmethod
  def load(cls, path: str | os.PathLike[str]) -> MemoryStructure:
    with open(path, encoding="utf-8") as f:
      return cls.from_json(f.read())

  # --- revisions ------------------------------------------------------------------------

  def revise(self, changes: Mapping[str, Any], note: str) -> MemoryStructure:
    """A new validated revision with `changes` applied.

    Args:
      changes: dotted path -> new value, on the JSON form: "plan.user",
        "limits.max_files", "files.0.content", "pins.0.view", "texts.commit",
        "observers" (a whole list)... A path ending in a list index one past
        the end appends. `None` for an element of a list of specs (files,
        observers, pins, harness_files, action_checks, task_overrides, modes)
        removes it (applied last, highest index first).
      note: why; recorded in the new revision.

    Raises:
      StructureError: an unknown path, or a change that makes it invalid.
    """
    if not isinstance(note, str) or not note.strip():
      raise StructureError("note", "a revision needs a note saying why")
    data = apply_changes(self.to_dict(), changes)
    data.update(version=self.version + 1, parent=self.version, note=note, changes="")
    new = MemoryStructure.from_dict(data)
    return dataclasses.replace(new, changes=structure_diff(self, new))


def structure_diff(a: MemoryStructure, b: MemoryStructure) -> str:
  """A human-readable diff of two structures (revision bookkeeping fields ignored)."""
  return diff_dicts(a.to_dict(), b.to_dict())


# --- building from JSON ------------------------------------------------------------------------

# Field -> (spec class, is a list of it, fields of the spec that are tuples).
_TOP: dict[str, tuple[type | None, bool, tuple[str, ...]]] = {
    "log": (PhaseSpec, False, ("allowed_ops",)),
    "plan": (PhaseSpec, False, ("allowed_ops",)),
    "limits": (StoreLimits, False, ()),
    "files": (FileSpec, True, ()),
    "observers": (ObserverSpec, True, ("phases",)),
    "pins": (PinSpec, True, ("phases",)),
    "harness_files": (HarnessFileSpec, True, ()),
    "size_warning": (SizeWarning, False, ("exempt", "phases")),
    "action_checks": (ActionCheckSpec, True, ()),
    "task_overrides": (TaskOverride, True, ()),
    "modes": (ModeSpec, True, ("phases", "allowed_ops")),
    "hooks": (HookSpec, False, ()),
    "fallback_alternatives": (None, True, ()),
}
_OBJECTS = ("params", "changes", "texts", "action_aliases")


def _build(cls: type, value: Any, field: str, nested: Mapping[str, Any]) -> dict[str, Any]:
  """The constructor kwargs of `cls` from a JSON object, each nested spec built."""
  if not isinstance(value, Mapping):
    raise StructureError(field or "<root>", "must be an object")
  fields = dataclasses.fields(cls)
  known = {f.name for f in fields}
  prefix = f"{field}." if field else ""
  for key in value:
    if key not in known:
      raise StructureError(f"{prefix}{key}", f"unknown field; known: {', '.join(sorted(known))}")
  for f in fields:
    if (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        and f.name not in value):
      raise StructureError(f"{prefix}{f.name}", "missing (a required field)")
  kwargs = dict(value)
  for key, v in value.items():
    where = f"{prefix}{key}"
    if key in _OBJECTS and (field or key != "changes"):  # top-level changes is the diff
      if not isinstance(v, Mapping):
        raise StructureError(where, "must be an object")
      kwargs[key] = dict(v)
    elif key in nested:
      spec, many, tuples = nested[key]
      if many:
        if not isinstance(v, list | tuple):
          raise StructureError(where, "must be a list")
        kwargs[key] = tuple(x if spec is None else _make(spec, x, f"{where}[{i}]", tuples)
                            for i, x in enumerate(v))
      else:
        kwargs[key] = _make(spec, v, where, tuples)
  return kwargs


def _make(cls: type, value: Any, field: str, tuples: tuple[str, ...]) -> Any:
  kwargs = _build(cls, value, field, {t: (None, True, ()) for t in tuples})
  try:
    made = cls(**kwargs)
  except TypeError as e:
    raise StructureError(field, str(e)) from None
  if isinstance(made, StoreLimits):  # checked here so later checks never compare a str
    problems = made.check()
    if problems:
      name, message = problems[0]
      raise StructureError(f"{field}.{name}", message)
  return made


def _jsonable(value: Any) -> Any:
  if isinstance(value, Mapping):
    return {k: _jsonable(v) for k, v in value.items()}
  if isinstance(value, list | tuple):
    return [_jsonable(v) for v in value]
  return value


# --- shipped structures ----------------------------------------------------------------------

_DISPLAY_NAMES = {"crafter": "Crafter", "minihack": "MiniHack", "nethack": "NetHack"}
_ALIASES = {"crafter_original": "crafter", "craftax": "crafter", "nle": "nethack"}


def available_structures() -> list[str]:
  """Names of the shipped structures: each game's v0 ("crafter") and variants
  ("crafter_evolved")."""
  pkg = resources.files("automem.memory") / "structures"
  return sorted(p.name[:-5] for p in pkg.iterdir() if p.name.endswith(".json"))


def load_structure(name: str, variant: str = "") -> MemoryStructure:
  """A shipped structure by game ("crafter"; aliases allowed) and variant ("evolved"), by
  full name ("minihack_evolved"), or a JSON file path.

  `load_structure("crafter")` is the game's v0; `load_structure("crafter", "evolved")` or
  `load_structure("crafter_evolved")` its evolved structure.
  """
  if name.endswith(".json") or os.sep in name:
    return MemoryStructure.load(name)
  key = _ALIASES.get(name, name) + (f"_{variant}" if variant else "")
  path = resources.files("automem.memory") / "structures" / f"{key}.json"
  if not path.is_file():
    raise ValueError(f"no shipped structure {key!r}; available: {available_structures()}")
  return MemoryStructure.from_json(path.read_text(encoding="utf-8"))


def resolve_structure(game: str, name: str = "") -> MemoryStructure:
  """What `--config.game.<game>.structure=NAME` means: "" or "v0" the game's v0; a shipped
  name ("minihack_evolved"); a variant of the game ("evolved"); or a JSON file path."""
  if not name or name == "v0":
    return load_structure(game)
  if name.endswith(".json") or os.sep in name or name in available_structures():
    return load_structure(name)
  return load_structure(game, name)


def _norm_action(name: str) -> str:
  return " ".join(name.replace("_", " ").replace("-", " ").split()).lower()


def history_window_start(num_steps: int, history_length: int) -> int:
  """First history entry shown when `num_steps` are available.

  The window holds at most `history_length` entries; its start moves in
  blocks of `max(history_length // 2, 1)`, so the text before the newest
  line stays the same for that many steps in a row.
  """
  if history_length <= 0:
    return num_steps
  if num_steps <= history_length:
    return 0
  block = max(history_length // 2, 1)
  return -(-(num_steps - history_length) // block) * block
