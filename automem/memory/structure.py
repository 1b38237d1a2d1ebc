"""MemoryStructure: the declarative spec of the memory skill that Loop 1 revises.

A structure holds everything a reviewer may change: the LOG and PLAN prompt
templates, the initial memory files (content, description, format), the
command vocabulary and iteration limits of each phase, the store limits,
the fallback action, the history length and the helper observers. It is
plain data (JSON in, JSON out), validated on construction; a validation
error names the offending field (`StructureError.field`).

Prompt layout (prefix caching). Each phase has three templates:

- `system`: fixed for the whole episode. Only *static* placeholders:
  {game} {task} {game_rules} {actions} {commands} {fallback_action}.
  `system_prompt(phase, actions=..., task=...)` fills them.
- `user`: the first message of a phase at a step. Only *dynamic*
  placeholders, and in cache order: {file_index} before {history}, both
  before the per-step ones {step} {helpers} {last_action} {last_outcome}
  {observation}. `user_prompt(phase, **values)` fills them.
- `follow_up`: the message after each further turn of the same phase:
  {results} (required) {file_index} {helpers} {step}.

Literal braces in templates are written `{{` and `}}`.

Helper observers (`ObserverSpec`) are computed by the agent from the
observations and actions; their text goes into the {helpers} placeholder of
the phases they list. Known observers and their parameters are in
`OBSERVERS`.

Revisions: `structure.revise(changes, note)` applies dotted-path changes
(`{"plan.max_iterations": 3, "files.2.content": "..."}`) and returns a new,
validated structure with `version + 1`, `parent` = the old version and
`changes` = a human-readable diff (`structure_diff`).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import os
import string
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

from automem.memory.commands import ALL_OPS, command_reference
from automem.memory.names import InvalidName, name_key, normalize_name
from automem.memory.store import LIMIT_RANGES, StoreLimits

SCHEMA = "automem.memory_structure/1"
PHASES = ("log", "plan")

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
# Rank of each dynamic placeholder in a user template; lower ranks come first.
_CACHE_RANK = {"file_index": 0, "history": 1}

MAX_TEMPLATE_CHARS = 12_000
MAX_RULES_CHARS = 24_000
MAX_DESCRIPTION_CHARS = 300
MAX_SCHEMA_CHARS = 2_000
ITERATION_RANGE = (1, 20)
COMMANDS_PER_TURN_RANGE = (1, 64)
HISTORY_RANGE = (0, 200)


# Observer name -> parameter -> (type, min, max, default).
OBSERVERS: dict[str, dict[str, tuple[type, float, float, Any]]] = {
    # Warn when the observation has not changed for `min_unchanged` steps.
    "stagnation": {"min_unchanged": (int, 1, 100, 1), "strong_after": (int, 1, 1000, 3)},
    # Warn when one action took `min_repeats` of the last `window` steps.
    "repetition": {"window": (int, 2, 200, 8), "min_repeats": (int, 2, 200, 4)},
    # Warn when a vital (health, food, drink, energy, HP, hunger) is below a fraction of its max.
    "vitals": {"threshold": (float, 0.0, 1.0, 0.3)},
    # Summarise which neighbouring map cells are passable (NetHack / MiniHack maps).
    "map_passability": {"radius": (int, 1, 5, 1), "show_stairs": (bool, 0, 1, True)},
}


class StructureError(ValueError):
  """A structure that is not valid; `field` names the offending field."""

  def __init__(self, field: str, message: str):
    super().__init__(f"{field}: {message}")
    self.field = field
    self.message = message


@dataclasses.dataclass(frozen=True)
class FileSpec:
  """One initial memory file.

  Attributes:
    name: file name (see `names.normalize_name`).
    description: one line shown in the file index.
    content: initial content.
    schema: the line format the file should follow (shown to the model via
      the templates/rules; free text, e.g. "x,y: what is there").
    persist: keep its content across episodes of a run instead of resetting it.
    read_only: the agent may read it but not change it.
  """

  name: str
  description: str = ""
  content: str = ""
  schema: str = ""
  persist: bool = False
  read_only: bool = False


@dataclasses.dataclass(frozen=True)
class PhaseSpec:
  """Templates, vocabulary and limits of one phase (LOG or PLAN).

  Attributes:
    system: the fixed instructions (static placeholders only).
    user: the first message of the phase at a step (dynamic placeholders).
    follow_up: the message after each further turn ({results} required).
    allowed_ops: the commands this phase may run (LOG needs DONE, PLAN ACTION).
    max_iterations: LLM turns per step in this phase before it is cut off.
    max_commands_per_turn: memory commands run per completion; the rest are refused.
  """

  system: str
  user: str
  follow_up: str
  allowed_ops: tuple[str, ...]
  max_iterations: int = 5
  max_commands_per_turn: int = 8


@dataclasses.dataclass(frozen=True)
class ObserverSpec:
  """A helper observer the agent computes; its text goes into {helpers}.

  Attributes:
    name: a key of `OBSERVERS`.
    phases: the phases whose {helpers} get its text.
    params: parameters (missing ones take the defaults of `OBSERVERS`).
  """

  name: str
  phases: tuple[str, ...] = PHASES
  params: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def param(self, key: str) -> Any:
    """A parameter value, or its default."""
    if key in self.params:
      return self.params[key]
    return OBSERVERS[self.name][key][3]


@dataclasses.dataclass(frozen=True)
class MemoryStructure:
  """The complete, versioned memory structure for one game.

  Attributes:
    game: "crafter", "minihack", "nethack" (or another registered game).
    version: revision number; v0 is the starting agent.
    parent: the version this one was revised from (None for v0).
    note: why this revision was made.
    changes: human-readable diff against the parent.
    game_rules: game knowledge shown in the system prompts ({game_rules}).
    log: the LOG phase (record what happened; ends with DONE).
    plan: the PLAN phase (consult memory; ends with ACTION).
    files: the initial memory files.
    limits: store quotas.
    observers: enabled helper observers.
    fallback_action: the action taken when PLAN commits none (or an invalid one).
    fallback_alternatives: tried in order when a task does not offer
      `fallback_action` (e.g. a MiniHack task without "search"); see
      `resolve_fallback`.
    history_length: steps of action/outcome history in {history}.
    log_first_step: run LOG before the first action too (nothing happened yet).
    map_file: the file UPSERT_MAP writes to (None: UPSERT_MAP unavailable).
    upsert_separator: between key and value in UPSERT lines.
    schema: format id of the JSON form.
  """

  game: str
  game_rules: str
  log: PhaseSpec
  plan: PhaseSpec
  files: tuple[FileSpec, ...] = ()
  limits: StoreLimits = dataclasses.field(default_factory=StoreLimits)
  observers: tuple[ObserverSpec, ...] = ()
  fallback_action: str = "noop"
  fallback_alternatives: tuple[str, ...] = ()
  history_length: int = 8
  log_first_step: bool = False
  map_file: str | None = None
  upsert_separator: str = ": "
  version: int = 0
  parent: int | None = None
  note: str = ""
  changes: str = ""
  schema: str = SCHEMA

  def __post_init__(self) -> None:
    problems = self.check()
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

  def file(self, name: str) -> FileSpec | None:
    for f in self.files:
      if name_key(f.name) == name_key(name):
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

  @property
  def label(self) -> str:
    return f"{self.game}-v{self.version}"

  # --- prompts --------------------------------------------------------------------------

  def system_prompt(self, phase: str, *, actions: Sequence[str] | str, task: str = "") -> str:
    """The phase's fixed system text with every static placeholder filled."""
    spec = self.phase(phase)
    acts = actions if isinstance(actions, str) else "\n".join(actions)
    values = {"game": _DISPLAY_NAMES.get(self.game, self.game), "task": task,
              "game_rules": self.game_rules, "actions": acts,
              "commands": command_reference(spec.allowed_ops),
              "fallback_action": self.fallback_action}
    return _fill(spec.system, values, f"{phase}.system")

  def user_prompt(self, phase: str, **values: Any) -> str:
    """The phase's first message at a step; every placeholder it uses must be given."""
    return _fill(self.phase(phase).user, values, f"{phase}.user")

  def follow_up_prompt(self, phase: str, **values: Any) -> str:
    return _fill(self.phase(phase).follow_up, values, f"{phase}.follow_up")

  def placeholders(self, phase: str, part: str) -> list[str]:
    """The placeholders a template uses, in order of first appearance."""
    return _placeholders(getattr(self.phase(phase), part), f"{phase}.{part}")

  # --- validation -----------------------------------------------------------------------

  def check(self) -> list[tuple[str, str]]:
    """Every problem as (field, message); empty for a valid structure."""
    out: list[tuple[str, str]] = []
    add = lambda f, m: out.append((f, m))  # noqa: E731
    if self.schema != SCHEMA:
      add("schema", f"expected {SCHEMA!r}, got {self.schema!r}")
    if not isinstance(self.game, str) or not self.game.strip():
      add("game", "must be a non-empty string")
    if not _is_int(self.version) or self.version < 0:
      add("version", f"must be a non-negative integer, got {self.version!r}")
    elif self.parent is not None and (
        not _is_int(self.parent) or not 0 <= self.parent < self.version):
      add("parent", f"must be None or a version below {self.version}, got {self.parent!r}")
    _check_text(add, "game_rules", self.game_rules, MAX_RULES_CHARS)
    if isinstance(self.limits, StoreLimits):
      for f, m in self.limits.check():
        add(f"limits.{f}", m)
    else:
      add("limits", "must be a StoreLimits")
    for name in PHASES:
      _check_phase(add, name, getattr(self, name), self.map_file)
    self._check_files(add)
    self._check_observers(add)
    if not isinstance(self.fallback_action, str) or not self.fallback_action.strip():
      add("fallback_action", "must be a non-empty action name")
    elif len(self.fallback_action) > 64 or "\n" in self.fallback_action:
      add("fallback_action", "must be one line of at most 64 characters")
    alts = self.fallback_alternatives
    if not isinstance(alts, tuple) or len(alts) > 16 or not all(
        isinstance(a, str) and a.strip() and len(a) <= 64 and "\n" not in a for a in alts):
      add("fallback_alternatives", "must be a list of at most 16 one-line action names")
    lo, hi = HISTORY_RANGE
    if not _is_int(self.history_length) or not lo <= self.history_length <= hi:
      add("history_length", f"must be an integer in [{lo}, {hi}], got {self.history_length!r}")
    if not isinstance(self.log_first_step, bool):
      add("log_first_step", "must be true or false")
    if self.map_file is not None:
      try:
        if normalize_name(self.map_file) != self.map_file:
          add("map_file", f"not a canonical file name: {self.map_file!r}")
      except InvalidName as e:
        add("map_file", str(e))
    sep = self.upsert_separator
    if not isinstance(sep, str) or not 1 <= len(sep) <= 4 or not sep.strip() or "\n" in sep:
      add("upsert_separator", f"must be 1-4 characters with a visible one, got {sep!r}")
    if not isinstance(self.note, str) or len(self.note) > 4000:
      add("note", "must be text of at most 4000 characters")
    return out

  def _check_files(self, add: Any) -> None:
    seen: dict[str, str] = {}
    total = 0
    if not isinstance(self.files, tuple):
      add("files", "must be a list of files")
      return
    lim = self.limits if isinstance(self.limits, StoreLimits) else StoreLimits()
    if len(self.files) > lim.max_files:
      add("files", f"{len(self.files)} files exceed limits.max_files={lim.max_files}")
    for i, f in enumerate(self.files):
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
      _check_text(add, f"{where}.description", f.description, MAX_DESCRIPTION_CHARS)
      if isinstance(f.description, str) and "\n" in f.description:
        add(f"{where}.description", "must be one line")
      _check_text(add, f"{where}.schema", f.schema, MAX_SCHEMA_CHARS)
      if not isinstance(f.content, str):
        add(f"{where}.content", "must be text")
        continue
      size = len(f.content.encode("utf-8", "replace"))
      total += size
      if size > lim.max_file_bytes:
        add(f"{where}.content", f"{size} bytes exceed limits.max_file_bytes={lim.max_file_bytes}")
      for flag in ("persist", "read_only"):
        if not isinstance(getattr(f, flag), bool):
          add(f"{where}.{flag}", "must be true or false")
    if total > lim.max_total_bytes:
      add("files", f"{total} bytes exceed limits.max_total_bytes={lim.max_total_bytes}")

  def _check_observers(self, add: Any) -> None:
    seen = set()
    for i, o in enumerate(self.observers):
      where = f"observers[{i}]"
      if not isinstance(o, ObserverSpec):
        add(where, "must be an observer spec")
        continue
      if o.name not in OBSERVERS:
        add(f"{where}.name", f"unknown observer {o.name!r}; known: {', '.join(OBSERVERS)}")
        continue
      if o.name in seen:
        add(f"{where}.name", f"observer {o.name!r} listed twice")
      seen.add(o.name)
      if not o.phases or any(p not in PHASES for p in o.phases):
        add(f"{where}.phases",
            f"must be a non-empty subset of {list(PHASES)}, got {list(o.phases)}")
      schema = OBSERVERS[o.name]
      for key, value in o.params.items():
        if key not in schema:
          add(f"{where}.params.{key}", f"unknown parameter; known: {', '.join(schema)}")
          continue
        typ, lo, hi, _ = schema[key]
        ok_type = (isinstance(value, bool) if typ is bool else
                   _is_int(value) if typ is int else
                   isinstance(value, int | float) and not isinstance(value, bool))
        if not ok_type:
          add(f"{where}.params.{key}", f"must be {typ.__name__}, got {value!r}")
        elif typ is not bool and not lo <= value <= hi:
          add(f"{where}.params.{key}", f"must be in [{lo}, {hi}], got {value}")

  # --- serialisation --------------------------------------------------------------------

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["files"] = [dict(f) for f in d["files"]]
    d["fallback_alternatives"] = list(d["fallback_alternatives"])
    d["observers"] = [dict(o, phases=list(o["phases"]), params=dict(o["params"]))
                      for o in d["observers"]]
    for p in PHASES:
      d[p]["allowed_ops"] = list(d[p]["allowed_ops"])
    return d

  def to_json(self, indent: int | None = 2) -> str:
    return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False) + "\n"

  @classmethod
  def from_dict(cls, data: Mapping[str, Any]) -> MemoryStructure:
    """Builds and validates a structure; unknown or mistyped fields are named in the error."""
    if not isinstance(data, Mapping):
      raise StructureError("<root>", "a structure must be a JSON object")
    data = dict(data)
    kwargs: dict[str, Any] = {}
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
      if key not in known:
        raise StructureError(str(key), f"unknown field; known: {', '.join(sorted(known))}")
    _require(cls, data, "")
    for key, value in data.items():
      if key in PHASES:
        kwargs[key] = _build(PhaseSpec, value, key, tuples=("allowed_ops",))
      elif key == "limits":
        kwargs[key] = _build(StoreLimits, value, key)
      elif key == "files":
        kwargs[key] = tuple(_build(FileSpec, v, f"files[{i}]")
                            for i, v in enumerate(_list(value, key)))
      elif key == "observers":
        kwargs[key] = tuple(_build(ObserverSpec, v, f"observers[{i}]", tuples=("phases",))
                            for i, v in enumerate(_list(value, key)))
      elif key == "fallback_alternatives":
        kwargs[key] = tuple(_list(value, key))
      else:
        kwargs[key] = value
    for p in PHASES:
      if p not in kwargs:
        raise StructureError(p, "missing")
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
        "limits.max_files", "files.0.content", "observers" (a whole list)...
        A path ending in a list index one past the end appends. A value of
        `None` for a file or observer list element removes it (applied last,
        highest index first).
      note: why; recorded in the new revision.

    Raises:
      StructureError: an unknown path, or a change that makes it invalid.
    """
    if not isinstance(note, str) or not note.strip():
      raise StructureError("note", "a revision needs a note saying why")
    data = self.to_dict()
    removals = []
    for path, value in changes.items():
      parts = str(path).split(".")
      if parts[0] in ("version", "parent", "changes", "note", "schema"):
        raise StructureError(path, "set by revise, not by changes")
      if value is None and len(parts) == 2 and parts[0] in ("files", "observers"):
        removals.append((parts[0], _index(data[parts[0]], parts[1], path, allow_end=False)))
        continue
      _set_path(data, parts, copy.deepcopy(value), path)
    for key, idx in sorted(removals, key=lambda r: -r[1]):
      del data[key][idx]
    data.update(version=self.version + 1, parent=self.version, note=note, changes="")
    new = MemoryStructure.from_dict(data)
    return dataclasses.replace(new, changes=structure_diff(self, new))


def structure_diff(a: MemoryStructure, b: MemoryStructure) -> str:
  """A human-readable diff of two structures (revision bookkeeping fields ignored)."""
  fa, fb = _flatten(a.to_dict()), _flatten(b.to_dict())
  rows = []
  for key in sorted(set(fa) | set(fb), key=_path_sort_key):
    if key.split(".")[0] in ("version", "parent", "note", "changes", "schema"):
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


def spec_reference() -> str:
  """What a reviewer may change and within which bounds, as prompt text (for Loop 1)."""
  ph = lambda d: " ".join("{" + k + "}" for k in d)  # noqa: E731
  lim = "\n".join(f"  limits.{k:<20} {lo}..{hi}" for k, (lo, hi) in LIMIT_RANGES.items())
  obs = "\n".join(
      f"    {name}: " + ", ".join(f"{k} ({t.__name__}, {lo}..{hi}, default {d})"
                                for k, (t, lo, hi, d) in params.items())
      for name, params in OBSERVERS.items())
  return f"""MemoryStructure fields (dotted paths, e.g. "plan.max_iterations", "files.2.content"):
  game_rules                  text (max {MAX_RULES_CHARS} chars), shown as {{game_rules}}
  log.* / plan.*              the LOG phase (ends with DONE) and PLAN phase (ends with ACTION)
    .system                   fixed text; placeholders: {ph(STATIC_PLACEHOLDERS)}
    .user                     per step; placeholders: {ph(DYNAMIC_PLACEHOLDERS)};
                              {{file_index}} before {{history}} before the rest (prefix caching);
                              PLAN needs {{observation}}, LOG {{last_outcome}} or {{observation}}
    .follow_up                after each further turn; needs {{results}};
                              placeholders: {ph(FOLLOW_UP_PLACEHOLDERS)}
    .allowed_ops              subset of {" ".join(ALL_OPS)}
    .max_iterations           {ITERATION_RANGE[0]}..{ITERATION_RANGE[1]} LLM turns per step
    .max_commands_per_turn    {COMMANDS_PER_TURN_RANGE[0]}..{COMMANDS_PER_TURN_RANGE[1]}
  files[i]                    name, description (one line, max {MAX_DESCRIPTION_CHARS}), content,
                              schema (line format, max {MAX_SCHEMA_CHARS}), persist, read_only
{lim}
  observers[i]                name, phases (log/plan), params:
{obs}
  fallback_action             action played when PLAN commits none
  fallback_alternatives       tried in order when a task does not offer fallback_action
  history_length              {HISTORY_RANGE[0]}..{HISTORY_RANGE[1]} steps in {{history}}
  log_first_step              run LOG before the first action
  map_file                    file used by UPSERT_MAP (needed to allow UPSERT_MAP)
  upsert_separator            between key and value of UPSERT lines
Templates write literal braces as {{{{ and }}}}. Prompts: max {MAX_TEMPLATE_CHARS} chars each.
Commands:
{command_reference(ALL_OPS)}"""


_DISPLAY_NAMES = {"crafter": "Crafter", "minihack": "MiniHack", "nethack": "NetHack"}
_ALIASES = {"crafter_original": "crafter", "craftax": "crafter", "nle": "nethack"}


def available_structures() -> list[str]:
  pkg = resources.files("automem.memory") / "structures"
  return sorted(p.name[:-5] for p in pkg.iterdir() if p.name.endswith(".json"))


def load_structure(game: str) -> MemoryStructure:
  """The v0 structure of a game ("crafter", "minihack", "nethack"; aliases allowed)."""
  key = _ALIASES.get(game, game)
  path = resources.files("automem.memory") / "structures" / f"{key}.json"
  if not path.is_file():
    raise ValueError(f"no v0 structure for {game!r}; available: {available_structures()}")
  return MemoryStructure.from_json(path.read_text(encoding="utf-8"))


# --- helpers --------------------------------------------------------------------------------

_MISSING = object()


def _norm_action(name: str) -> str:
  return " ".join(name.replace("_", " ").replace("-", " ").split()).lower()


def _is_int(v: Any) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _check_text(add: Any, field: str, value: Any, cap: int) -> None:
  if not isinstance(value, str):
    add(field, f"must be text, got {type(value).__name__}")
  elif len(value) > cap:
    add(field, f"{len(value)} characters exceed the cap of {cap}")


def _placeholders(template: str, field: str) -> list[str]:
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
    if spec or conv:
      raise StructureError(
          field, f"placeholder {{{name}}} must not have a format spec or conversion")
    if name not in names:
      names.append(name)
  return names


def _check_phase(add: Any, name: str, spec: Any, map_file: str | None) -> None:
  if not isinstance(spec, PhaseSpec):
    add(name, "must be a phase spec")
    return
  parts = (("system", STATIC_PLACEHOLDERS), ("user", DYNAMIC_PLACEHOLDERS),
           ("follow_up", FOLLOW_UP_PLACEHOLDERS))
  for part, allowed in parts:
    field = f"{name}.{part}"
    text = getattr(spec, part)
    if not isinstance(text, str) or len(text) > MAX_TEMPLATE_CHARS:
      add(field, f"must be text of at most {MAX_TEMPLATE_CHARS} characters")
      continue
    try:
      used = _placeholders(text, field)
    except StructureError as e:
      add(e.field, e.message)
      continue
    for p in used:
      if p not in allowed:
        where = ("the system template (static only, for prefix caching)" if part == "system"
                 else f"the {part} template")
        add(field, f"unknown placeholder {{{p}}} in {where}; allowed: "
                   + " ".join(f"{{{k}}}" for k in allowed))
    if part == "user":
      ranks = [_CACHE_RANK.get(p, 2) for p in used]
      if ranks != sorted(ranks):
        add(field, "placeholders must come in cache order: {file_index}, then {history}, "
                   f"then per-step ones; got {' '.join('{' + p + '}' for p in used)}")
      need = "observation" if name == "plan" else None
      if need and need not in used:
        add(field, f"the {name.upper()} user template must contain {{{need}}}")
      if name == "log" and not {"last_outcome", "observation"} & set(used):
        add(field, "the LOG user template must contain {last_outcome} or {observation}")
    if part == "follow_up" and "results" not in used:
      add(field, "must contain {results}")
  ops = spec.allowed_ops
  if not isinstance(ops, tuple) or not all(isinstance(o, str) for o in ops):
    add(f"{name}.allowed_ops", "must be a list of op names")
    return
  for o in ops:
    if o not in ALL_OPS:
      add(f"{name}.allowed_ops", f"unknown op {o!r}; known: {', '.join(ALL_OPS)}")
  if len(set(ops)) != len(ops):
    add(f"{name}.allowed_ops", "lists an op twice")
  want, never = ("DONE", "ACTION") if name == "log" else ("ACTION", "DONE")
  if want not in ops:
    add(f"{name}.allowed_ops", f"the {name.upper()} phase needs {want}")
  if never in ops:
    add(f"{name}.allowed_ops", f"{never} does not belong in the {name.upper()} phase")
  if "UPSERT_MAP" in ops and not map_file:
    add(f"{name}.allowed_ops", "UPSERT_MAP needs map_file to be set")
  for field, (lo, hi), value in ((f"{name}.max_iterations", ITERATION_RANGE, spec.max_iterations),
                                 (f"{name}.max_commands_per_turn", COMMANDS_PER_TURN_RANGE,
                                  spec.max_commands_per_turn)):
    if not _is_int(value) or not lo <= value <= hi:
      add(field, f"must be an integer in [{lo}, {hi}], got {value!r}")


def _fill(template: str, values: Mapping[str, Any], field: str) -> str:
  used = _placeholders(template, field)
  missing = [p for p in used if p not in values]
  if missing:
    raise KeyError(f"{field}: no value for " + ", ".join("{" + p + "}" for p in missing))
  return template.format_map({p: "" if values[p] is None else str(values[p]) for p in used})


def _list(value: Any, field: str) -> list[Any]:
  if not isinstance(value, list | tuple):
    raise StructureError(field, "must be a list")
  return list(value)


def _require(cls: type, value: Mapping[str, Any], prefix: str) -> None:
  """Names the first required field (no default) that `value` lacks."""
  for f in dataclasses.fields(cls):
    if (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        and f.name not in value):
      raise StructureError(f"{prefix}{f.name}", "missing (a required field)")


def _build(cls: type, value: Any, field: str, tuples: tuple[str, ...] = ()) -> Any:
  if not isinstance(value, Mapping):
    raise StructureError(field, "must be an object")
  known = {f.name for f in dataclasses.fields(cls)}
  for key in value:
    if key not in known:
      raise StructureError(f"{field}.{key}", f"unknown field; known: {', '.join(sorted(known))}")
  _require(cls, value, f"{field}.")
  kwargs = dict(value)
  for key in tuples:
    if key in kwargs:
      kwargs[key] = tuple(_list(kwargs[key], f"{field}.{key}"))
  if "params" in kwargs and not isinstance(kwargs["params"], Mapping):
    raise StructureError(f"{field}.params", "must be an object")
  try:
    return cls(**kwargs)
  except TypeError as e:
    raise StructureError(field, str(e)) from None


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
      if part not in node and not (last and k > 0 and parts[k - 1] == "params"):
        raise StructureError(path, f"unknown field {part!r}")
      if last:
        node[part] = value
        return
      node = node[part]
    else:
      raise StructureError(path, f"cannot descend into {type(node).__name__}")


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
  out: dict[str, Any] = {}
  if isinstance(value, dict):
    for k, v in value.items():
      out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    if not value and prefix:
      out[prefix] = {}
  elif isinstance(value, list) and not all(isinstance(v, str) for v in value):
    names = [v.get("name") if isinstance(v, dict) else None for v in value]
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

