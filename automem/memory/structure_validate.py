"""Validation of a MemoryStructure: every problem as (field, message).

`check_structure` never raises; `MemoryStructure.__post_init__` raises the
first problem as a `StructureError` naming its field.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from typing import Any

from automem.memory.action_checks import ACTION_CHECKS
from automem.memory.commands import ALL_OPS
from automem.memory.names import InvalidName, name_key, normalize_name
from automem.memory.observers import OBSERVERS
from automem.memory.store import StoreLimits
from automem.memory.structure_fields import (
    CACHE_RANK,
    COMMANDS_PER_TURN_RANGE,
    DYNAMIC_PLACEHOLDERS,
    FOLLOW_UP_PLACEHOLDERS,
    HISTORY_RANGE,
    ITERATION_RANGE,
    MAX_DESCRIPTION_CHARS,
    MAX_RULES_CHARS,
    MAX_SCHEMA_CHARS,
    MAX_TEMPLATE_CHARS,
    MAX_TEXT_CHARS,
    PER_STEP_RANK,
    PHASES,
    SCHEMA,
    STATIC_PLACEHOLDERS,
    TEXTS,
    StructureError,
    check_params,
    is_int,
    placeholders,
)
from automem.memory.structure_types import (
    HOOK_POINTS,
    PIN_VIEWS,
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
)

Add = Callable[[str, str], None]
MAX_LIST = 32  # pins, harness files, checks, overrides, modes, aliases/100


def check_structure(s: Any) -> list[tuple[str, str]]:
  """Every problem of structure `s` as (field, message); empty when valid."""
  out: list[tuple[str, str]] = []
  add: Add = lambda f, m: out.append((f, m))  # noqa: E731
  if s.schema != SCHEMA:
    add("schema", f"expected {SCHEMA!r}, got {s.schema!r}")
  if not isinstance(s.game, str) or not s.game.strip():
    add("game", "must be a non-empty string")
  if not is_int(s.version) or s.version < 0:
    add("version", f"must be a non-negative integer, got {s.version!r}")
  elif s.parent is not None and (not is_int(s.parent) or not 0 <= s.parent < s.version):
    add("parent", f"must be None or a version below {s.version}, got {s.parent!r}")
  check_text(add, "game_rules", s.game_rules, MAX_RULES_CHARS)
  if isinstance(s.limits, StoreLimits):
    for f, m in s.limits.check():
      add(f"limits.{f}", m)
  else:
    add("limits", "must be a StoreLimits")
  for name in PHASES:
    check_phase(add, name, getattr(s, name), s.map_file)
  _check_files(add, s)
  names = {name_key(f.name) for f in s.files if isinstance(f, FileSpec)
           and isinstance(f.name, str)}
  _check_observers(add, s.observers)
  _check_texts(add, s.texts)
  _check_pins(add, s, names)
  _check_harness(add, s, names)
  _check_size_warning(add, s)
  _check_action_checks(add, s)
  _check_aliases(add, s.action_aliases)
  _check_modes(add, s)
  _check_hooks(add, s.hooks)
  if not isinstance(s.fallback_action, str) or not s.fallback_action.strip():
    add("fallback_action", "must be a non-empty action name")
  elif len(s.fallback_action) > 64 or "\n" in s.fallback_action:
    add("fallback_action", "must be one line of at most 64 characters")
  alts = s.fallback_alternatives
  if not isinstance(alts, tuple) or len(alts) > 16 or not all(
      isinstance(a, str) and a.strip() and len(a) <= 64 and "\n" not in a for a in alts):
    add("fallback_alternatives", "must be a list of at most 16 one-line action names")
  lo, hi = HISTORY_RANGE
  if not is_int(s.history_length) or not lo <= s.history_length <= hi:
    add("history_length", f"must be an integer in [{lo}, {hi}], got {s.history_length!r}")
  if not is_int(s.max_rejections) or not 0 <= s.max_rejections <= 10:
    add("max_rejections", f"must be an integer in [0, 10], got {s.max_rejections!r}")
  if not isinstance(s.log_first_step, bool):
    add("log_first_step", "must be true or false")
  if s.map_file is not None:
    try:
      if normalize_name(s.map_file) != s.map_file:
        add("map_file", f"not a canonical file name: {s.map_file!r}")
    except InvalidName as e:
      add("map_file", str(e))
  sep = s.upsert_separator
  if not isinstance(sep, str) or not 1 <= len(sep) <= 4 or not sep.strip() or "\n" in sep:
    add("upsert_separator", f"must be 1-4 characters with a visible one, got {sep!r}")
  if not isinstance(s.note, str) or len(s.note) > 4000:
    add("note", "must be text of at most 4000 characters")
  if not out:
    _check_overrides(add, s)  # only on an otherwise valid structure (they revise it)
  return out


def check_text(add: Add, field: str, value: Any, cap: int) -> None:
  if not isinstance(value, str):
    add(field, f"must be text, got {type(value).__name__}")
  elif len(value) > cap:
    add(field, f"{len(value)} characters exceed the cap of {cap}")


def check_user_template(add: Add, field: str, text: Any, phase: str) -> list[str]:
  """Checks a phase's (or a mode's) user template; returns the placeholders it uses."""
  if not isinstance(text, str) or len(text) > MAX_TEMPLATE_CHARS:
    add(field, f"must be text of at most {MAX_TEMPLATE_CHARS} characters")
    return []
  try:
    used = placeholders(text, field)
  except StructureError as e:
    add(e.field, e.message)
    return []
  for p in used:
    if p not in DYNAMIC_PLACEHOLDERS:
      add(field, f"unknown placeholder {{{p}}} in the user template; allowed: "
                 + " ".join(f"{{{k}}}" for k in DYNAMIC_PLACEHOLDERS))
  ranks = [CACHE_RANK.get(p, PER_STEP_RANK) for p in used]
  if ranks != sorted(ranks):
    add(field, "placeholders must come in cache order: {file_index}, then {history}, then "
               "{pinned}, then per-step ones; got " + " ".join("{" + p + "}" for p in used))
  if phase == "plan" and "observation" not in used:
    add(field, "the PLAN user template must contain {observation}")
  if phase == "log" and not {"last_outcome", "observation"} & set(used):
    add(field, "the LOG user template must contain {last_outcome} or {observation}")
  return used


def check_ops(add: Add, field: str, ops: Any, phase: str, map_file: str | None) -> None:
  if not isinstance(ops, tuple) or not all(isinstance(o, str) for o in ops):
    add(field, "must be a list of op names")
    return
  for o in ops:
    if o not in ALL_OPS:
      add(field, f"unknown op {o!r}; known: {', '.join(ALL_OPS)}")
  if len(set(ops)) != len(ops):
    add(field, "lists an op twice")
  want, never = ("DONE", "ACTION") if phase == "log" else ("ACTION", "DONE")
  if want not in ops:
    add(field, f"the {phase.upper()} phase needs {want}")
  if never in ops:
    add(field, f"{never} does not belong in the {phase.upper()} phase")
  if "UPSERT_MAP" in ops and not map_file:
    add(field, "UPSERT_MAP needs map_file to be set")


def check_phase(add: Add, name: str, spec: Any, map_file: str | None) -> None:
  if not isinstance(spec, PhaseSpec):
    add(name, "must be a phase spec")
    return
  for part, allowed in (("system", STATIC_PLACEHOLDERS), ("follow_up", FOLLOW_UP_PLACEHOLDERS)):
    field = f"{name}.{part}"
    text = getattr(spec, part)
    if not isinstance(text, str) or len(text) > MAX_TEMPLATE_CHARS:
      add(field, f"must be text of at most {MAX_TEMPLATE_CHARS} characters")
      continue
    try:
      used = placeholders(text, field)
    except StructureError as e:
      add(e.field, e.message)
      continue
    for p in used:
      if p not in allowed:
        where = ("the system template (static only, for prefix caching)" if part == "system"
                 else f"the {part} template")
        add(field, f"unknown placeholder {{{p}}} in {where}; allowed: "
                   + " ".join(f"{{{k}}}" for k in allowed))
    if part == "follow_up" and "results" not in used:
      add(field, "must contain {results}")
  check_user_template(add, f"{name}.user", spec.user, name)
  check_ops(add, f"{name}.allowed_ops", spec.allowed_ops, name, map_file)
  for field, (lo, hi), value in ((f"{name}.max_iterations", ITERATION_RANGE, spec.max_iterations),
                                 (f"{name}.max_commands_per_turn", COMMANDS_PER_TURN_RANGE,
                                  spec.max_commands_per_turn)):
    if not is_int(value) or not lo <= value <= hi:
      add(field, f"must be an integer in [{lo}, {hi}], got {value!r}")


def _check_files(add: Add, s: Any) -> None:
  seen: dict[str, str] = {}
  total = 0
  if not isinstance(s.files, tuple):
    add("files", "must be a list of files")
    return
  lim = s.limits if isinstance(s.limits, StoreLimits) else StoreLimits()
  if len(s.files) > lim.max_files:
    add("files", f"{len(s.files)} files exceed limits.max_files={lim.max_files}")
  for i, f in enumerate(s.files):
    where = f"files[{i}]"
    if not isinstance(f, FileSpec):
      add(where, "must be a file spec")
      continue
    try:
      canon = normalize_name(f.name, lim.max_name_len)
      if canon != f.name:
        add(f"{where}.name", f"not canonical: {f.name!r} (use {canon!r})")
    except InvalidName as e:
      add(f"{where}.name", str(e))
      continue
    if name_key(canon) in seen:
      add(f"{where}.name", f"{f.name!r} collides with {seen[name_key(canon)]!r}")
    seen[name_key(canon)] = f.name
    check_text(add, f"{where}.description", f.description, MAX_DESCRIPTION_CHARS)
    if isinstance(f.description, str) and "\n" in f.description:
      add(f"{where}.description", "must be one line")
    check_text(add, f"{where}.schema", f.schema, MAX_SCHEMA_CHARS)
    for flag in ("persist", "read_only"):
      if not isinstance(getattr(f, flag), bool):
        add(f"{where}.{flag}", "must be true or false")
    for key, hi in (("keep_last", 100_000), ("keep_header", 100)):
      v = getattr(f, key)
      if not is_int(v) or not 0 <= v <= hi:
        add(f"{where}.{key}", f"must be an integer in [0, {hi}], got {v!r}")
    if not isinstance(f.content, str):
      add(f"{where}.content", "must be text")
      continue
    size = len(f.content.encode("utf-8", "replace"))
    total += size
    if size > lim.max_file_bytes:
      add(f"{where}.content", f"{size} bytes exceed limits.max_file_bytes={lim.max_file_bytes}")
  if total > lim.max_total_bytes:
    add("files", f"{total} bytes exceed limits.max_total_bytes={lim.max_total_bytes}")


def _check_phases(add: Add, field: str, phases: Any) -> bool:
  if not isinstance(phases, tuple) or not phases or any(p not in PHASES for p in phases):
    add(field, f"must be a non-empty subset of {list(PHASES)}, got {phases!r}")
    return False
  return True


def _check_list(add: Add, field: str, value: Any, cls: type, cap: int = MAX_LIST) -> bool:
  if not isinstance(value, tuple):
    add(field, "must be a list")
    return False
  if len(value) > cap:
    add(field, f"{len(value)} entries, at most {cap}")
    return False
  for i, v in enumerate(value):
    if not isinstance(v, cls):
      add(f"{field}[{i}]", f"must be a {cls.__name__}")
      return False
  return True


def _check_observer_ref(add: Add, where: str, name: Any, params: Any) -> bool:
  if name not in OBSERVERS:
    add(where, f"unknown observer {name!r}; known: {', '.join(sorted(OBSERVERS))}")
    return False
  for f, m in check_params(OBSERVERS[name].params, params, where.rsplit(".", 1)[0] + ".params"):
    add(f, m)
  return True


def _check_observers(add: Add, observers: Any) -> None:
  if not _check_list(add, "observers", observers, ObserverSpec):
    return
  seen = set()
  for i, o in enumerate(observers):
    where = f"observers[{i}]"
    if not _check_observer_ref(add, f"{where}.name", o.name, o.params):
      continue
    if o.name in seen:
      add(f"{where}.name", f"observer {o.name!r} listed twice")
    seen.add(o.name)
    _check_phases(add, f"{where}.phases", o.phases)


def _check_texts(add: Add, texts: Any) -> None:
  if not isinstance(texts, Mapping):
    add("texts", "must be an object")
    return
  for key, value in texts.items():
    field = f"texts.{key}"
    if key not in TEXTS:
      add(field, f"unknown text; known: {', '.join(TEXTS)}")
      continue
    check_text(add, field, value, MAX_TEXT_CHARS)
    if not isinstance(value, str):
      continue
    try:
      used = placeholders(value, field)
    except StructureError as e:
      add(e.field, e.message)
      continue
    allowed = TEXTS[key][1]
    for p in used:
      if p not in allowed:
        add(field, f"unknown placeholder {{{p}}}; allowed: "
                   + (" ".join("{" + a + "}" for a in allowed) or "none"))
  for key in TEXTS:
    if key not in texts:
      add(f"texts.{key}", "missing")


def _check_file_ref(add: Add, field: str, name: Any, names: set[str]) -> None:
  if not isinstance(name, str) or name_key(name) not in names:
    add(field, f"{name!r} is not one of the structure's files")


def _user_templates(s: Any, phase: str) -> list[tuple[str, str]]:
  out = [(f"{phase}.user", getattr(s, phase).user)]
  for i, m in enumerate(s.modes if isinstance(s.modes, tuple) else ()):
    if isinstance(m, ModeSpec) and phase in m.phases and m.user:
      out.append((f"modes[{i}].user", m.user))
  return out


def _check_pins(add: Add, s: Any, names: set[str]) -> None:
  if not _check_list(add, "pins", s.pins, PinSpec):
    return
  for i, p in enumerate(s.pins):
    where = f"pins[{i}]"
    _check_file_ref(add, f"{where}.file", p.file, names)
    if p.view not in PIN_VIEWS:
      add(f"{where}.view", f"must be one of {', '.join(PIN_VIEWS)}, got {p.view!r}")
    if not is_int(p.lines) or not 1 <= p.lines <= 500:
      add(f"{where}.lines", f"must be an integer in [1, 500], got {p.lines!r}")
    if not isinstance(p.pattern, str) or "\n" in p.pattern or len(p.pattern) > 200:
      add(f"{where}.pattern", "must be one line of at most 200 characters")
    elif p.view == "match" and not p.pattern.strip():
      add(f"{where}.pattern", "the match view needs a pattern")
    if not _check_phases(add, f"{where}.phases", p.phases):
      continue
    for phase in p.phases:
      for field, text in _user_templates(s, phase):
        if isinstance(text, str) and "{pinned}" not in text:
          add(f"{where}.phases", f"{field} has no {{pinned}} placeholder to show the pin")


def _check_harness(add: Add, s: Any, names: set[str]) -> None:
  if not _check_list(add, "harness_files", s.harness_files, HarnessFileSpec):
    return
  seen = set()
  for i, h in enumerate(s.harness_files):
    where = f"harness_files[{i}]"
    _check_file_ref(add, f"{where}.file", h.file, names)
    f = s.file(h.file) if isinstance(h.file, str) else None
    if f is not None and not f.read_only:
      add(f"{where}.file", f"{h.file!r} must be declared read_only (the harness writes it)")
    if f is not None and name_key(f.name) in seen:
      add(f"{where}.file", f"{h.file!r} is maintained twice")
    if f is not None:
      seen.add(name_key(f.name))
    _check_observer_ref(add, f"{where}.source", h.source, h.params)


def _check_size_warning(add: Add, s: Any) -> None:
  w = s.size_warning
  if not isinstance(w, SizeWarning):
    add("size_warning", "must be an object")
    return
  for key in ("max_lines", "max_bytes"):
    v = getattr(w, key)
    if not is_int(v) or not 0 <= v <= 1_000_000:
      add(f"size_warning.{key}", f"must be an integer in [0, 1000000], got {v!r}")
  if not isinstance(w.exempt, tuple) or not all(isinstance(x, str) for x in w.exempt):
    add("size_warning.exempt", "must be a list of file names")
  if not _check_phases(add, "size_warning.phases", w.phases) or not (w.max_lines or w.max_bytes):
    return
  for phase in w.phases:
    for field, text in _user_templates(s, phase):
      if isinstance(text, str) and "{helpers}" not in text:
        add("size_warning.phases", f"{field} has no {{helpers}} placeholder to show the warning")


def _check_action_checks(add: Add, s: Any) -> None:
  if not _check_list(add, "action_checks", s.action_checks, ActionCheckSpec):
    return
  for i, c in enumerate(s.action_checks):
    where = f"action_checks[{i}]"
    if c.kind not in ACTION_CHECKS:
      add(f"{where}.kind", f"unknown check {c.kind!r}; known: {', '.join(ACTION_CHECKS)}")
      continue
    for f, m in check_params(ACTION_CHECKS[c.kind].params, c.params, f"{where}.params"):
      add(f, m)
    moves = c.params.get("moves") if c.kind == "wall_move" and isinstance(c.params,
                                                                           Mapping) else None
    for act, delta in (moves or {}).items():
      parts = str(delta).split(",")
      if len(parts) != 2 or not all(p.strip().lstrip("-").isdigit() for p in parts):
        add(f"{where}.params.moves.{act}", f"must be \"dx,dy\", got {delta!r}")


def _check_aliases(add: Add, aliases: Any) -> None:
  if not isinstance(aliases, Mapping):
    add("action_aliases", "must be an object (what the model writes -> action name)")
    return
  if len(aliases) > 100 * MAX_LIST:
    add("action_aliases", f"{len(aliases)} entries, at most {100 * MAX_LIST}")
  for k, v in aliases.items():
    if not isinstance(k, str) or not k.strip() or "\n" in k or len(k) > 64:
      add(f"action_aliases.{k}", "the written form must be one line of at most 64 characters")
    elif not isinstance(v, str) or not v.strip() or "\n" in v or len(v) > 64:
      add(f"action_aliases.{k}", f"must map to an action name, got {v!r}")


def _check_modes(add: Add, s: Any) -> None:
  if not _check_list(add, "modes", s.modes, ModeSpec):
    return
  seen = set()
  for i, m in enumerate(s.modes):
    where = f"modes[{i}]"
    if not isinstance(m.name, str) or not m.name.isidentifier():
      add(f"{where}.name", f"must be a plain name, got {m.name!r}")
    elif m.name in seen:
      add(f"{where}.name", f"mode {m.name!r} defined twice")
    seen.add(m.name)
    _check_observer_ref(add, f"{where}.when", m.when, m.params)
    if not _check_phases(add, f"{where}.phases", m.phases):
      continue
    if not m.user and not m.allowed_ops:
      add(where, "a mode must change the user template or the allowed ops")
    for phase in m.phases:
      if m.user:
        check_user_template(add, f"{where}.user", m.user, phase)
      if m.allowed_ops:
        check_ops(add, f"{where}.allowed_ops", m.allowed_ops, phase, s.map_file)


def _check_hooks(add: Add, hooks: Any) -> None:
  if not isinstance(hooks, HookSpec):
    add("hooks", "must be an object")
    return
  for key in ("harness", "retention"):
    if getattr(hooks, key) not in HOOK_POINTS:
      add(f"hooks.{key}", f"must be one of {', '.join(HOOK_POINTS)}, got {getattr(hooks, key)!r}")


def _check_overrides(add: Add, s: Any) -> None:
  if not _check_list(add, "task_overrides", s.task_overrides, TaskOverride):
    return
  for i, o in enumerate(s.task_overrides):
    where = f"task_overrides[{i}]"
    if not isinstance(o.match, str) or not o.match.strip() or "\n" in o.match:
      add(f"{where}.match", "must be a one-line task-id glob")
    if not isinstance(o.changes, Mapping) or not o.changes:
      add(f"{where}.changes", "must be a non-empty object of dotted paths")
      continue
    for path in o.changes:
      if str(path).split(".")[0] == "task_overrides":
        add(f"{where}.changes.{path}", "an override cannot change task_overrides")
        return
    try:
      s.apply_changes(o.changes)
    except StructureError as e:
      add(f"{where}.changes.{e.field}", e.message)


def unmatched_overrides(s: Any, task_ids: list[str]) -> list[tuple[str, str]]:
  """Overrides whose glob matches none of `task_ids`, as (field, message)."""
  return [(f"task_overrides[{i}].match", f"{o.match!r} matches none of the tasks "
           f"{', '.join(task_ids)}")
          for i, o in enumerate(s.task_overrides)
          if not any(fnmatch.fnmatchcase(t, o.match) for t in task_ids)]
