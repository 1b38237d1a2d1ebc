"""Trajectory files: one JSONL file per episode, the only thing the loops read.

One typed schema, one reader. A file holds, in order:

- `Header` (`type: "header"`): episode id, game, task, seed, seed set,
  structure version, agent settings, the env settings and first observation
  (what a replay needs), the initial memory files, `schema_version`.
- per env step, one `Turn` per LLM turn (phase, turn, role, messages,
  completion, the sampling seed of the request, parsed commands with spans,
  results and -- for READ/SEARCH/TAIL/COUNT -- the file lines they returned
  (`meta.returned`), action, reward, memory diff, and `phase_end`: why the
  phase ended after this turn) and one `Step` (the action taken, reward, the
  observation after it, achievements/milestones, those newly unlocked);
- `End` (`type: "end"`): the final `EpisodeStats`, metrics, error, final
  memory files, the step at which each achievement unlocked, and the replay
  spec (seed, env settings, actions taken).

A file without an end record is an unfinished episode (a killed run), which a
resumed run plays again from the start. A torn last line (a writer killed
mid-line) is skipped by the reader; a broken line anywhere else is an error.

Records are frozen dataclasses with `to_json()` / `from_json()`; keys they do
not know are kept in `extra` (so a newer writer's additions survive a
round trip). Files written before the schema had a version (no
`schema_version` in the header) read as version 0 with defaults for the
fields they lack.

The agent builds its records through these classes (`Turn(...).to_json()`
while a step is in progress, since results are filled in as commands run);
`TrajectoryWriter` checks every record against the schema as it writes.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any, ClassVar

from automem.memory import MemoryStore, apply_diff, diff_snapshots, execute, parse_commands

SCHEMA_VERSION = 1

# Why a phase ended after a turn (`Turn.phase_end`; None: the phase goes on).
PHASE_ENDS = (
    "done",  # LOG: the model wrote <|DONE|>
    "action",  # PLAN / commit: a valid action was committed
    "max_iterations",  # the phase's turn limit was reached
    "prompt_budget",  # the prompt outgrew AgentConfig.max_prompt_chars
    "handoff",  # two-model PLAN: memory consultation over, the base model commits
    "fallback",  # commit turn without a valid action: the fallback action is taken
    "llm_error",  # the request failed; the episode ends
)


class TrajectoryError(ValueError):
  """A trajectory file or record that does not fit the schema."""


def _split(cls: type, data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
  """(known fields, the rest) of a JSON record for dataclass `cls`."""
  names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
  known = {k: v for k, v in data.items() if k in names}
  rest = {k: v for k, v in data.items() if k not in names and k != "type"}
  return known, rest


class _Record:
  """JSON round trip shared by the record classes."""

  TYPE: ClassVar[str] = ""
  REQUIRED: ClassVar[tuple[str, ...]] = ()

  def to_json(self) -> dict[str, Any]:
    out: dict[str, Any] = {"type": self.TYPE}
    for f in dataclasses.fields(self):  # type: ignore[arg-type]
      if f.name != "extra":
        out[f.name] = getattr(self, f.name)
    out.update(getattr(self, "extra", {}) or {})
    return out

  @classmethod
  def from_json(cls, data: Mapping[str, Any]):
    if not isinstance(data, Mapping):
      raise TrajectoryError(f"a {cls.TYPE} record must be an object, got {type(data).__name__}")
    if data.get("type", cls.TYPE) != cls.TYPE:
      raise TrajectoryError(f"expected a {cls.TYPE!r} record, got type {data.get('type')!r}")
    missing = [k for k in cls.REQUIRED if k not in data]
    if missing:
      raise TrajectoryError(f"{cls.TYPE} record lacks {', '.join(missing)}")
    known, rest = _split(cls, data)
    try:
      return cls(**known, extra=rest)  # type: ignore[call-arg]
    except (TypeError, ValueError) as e:
      raise TrajectoryError(f"bad {cls.TYPE} record: {e}") from e


@dataclasses.dataclass(frozen=True)
class Header(_Record):
  """The first line: what is played, how, and what a replay needs.

  Attributes:
    env_settings: `make_env` keyword arguments of the episode's env (step cap,
      task, ...), so `make_env(game, n, **env_settings)` rebuilds it.
    initial_observation: the observation after `reset(seed)`.
    agent_seed: `AgentConfig.seed`, the base of the per-request sampling seeds.
    sampling: the agent's sampling settings by kind of turn.
  """

  TYPE: ClassVar[str] = "header"
  REQUIRED: ClassVar[tuple[str, ...]] = ("episode_id",)

  episode_id: str
  game: str = ""
  task: str = ""
  seed: int = 0
  seed_set: str = ""
  structure_version: str = ""
  structure_label: str = ""
  layout: str = ""
  two_model: bool = False
  specialist_adapter: str | None = None
  action_names: list[str] = dataclasses.field(default_factory=list)
  initial_memory: dict[str, str] | None = None
  initial_observation: str | None = None
  env_settings: dict[str, Any] = dataclasses.field(default_factory=dict)
  agent_seed: int | None = None
  sampling: dict[str, Any] = dataclasses.field(default_factory=dict)
  started_at: float = 0.0
  schema_version: int = 0  # absent in files older than the versioned schema
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Turn(_Record):
  """One LLM turn.

  Attributes:
    phase: "log" | "plan" (a two-model commit turn is "plan", subphase "commit").
    commands: `CommandResult.to_record()` dicts: op, args, span (into the
      completion), ok, result, meta (READ/SEARCH/TAIL/COUNT: `meta.returned`,
      `{file: [line numbers]}` of the lines returned).
    sampling_seed: the request's seed (None: unseeded).
    phase_end: why the phase ended after this turn (`PHASE_ENDS`), or None.
  """

  TYPE: ClassVar[str] = "turn"
  REQUIRED: ClassVar[tuple[str, ...]] = ("step", "phase", "turn", "completion")

  step: int
  phase: str
  turn: int
  completion: str
  episode_id: str = ""
  subphase: str = ""
  role: str = ""
  adapter: str | None = None
  messages: list[dict[str, str]] = dataclasses.field(default_factory=list)
  finish_reason: str | None = None
  error: str | None = None
  prompt_tokens: int = 0
  completion_tokens: int = 0
  cached_tokens: int = 0
  commands: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  action: str | None = None
  reward: float | None = None
  memory_diff: dict[str, Any] = dataclasses.field(default_factory=dict)
  sampling_seed: int | None = None
  phase_end: str | None = None
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def key(self) -> tuple[int, str, int]:
    return (self.step, self.phase, self.turn)


@dataclasses.dataclass(frozen=True)
class Step(_Record):
  """One env step.

  Attributes:
    achievements: achievements/milestones reached so far, in order.
    unlocked: those first reached at this step.
    observation: the observation after the step (None in version-0 files).
  """

  TYPE: ClassVar[str] = "step"
  REQUIRED: ClassVar[tuple[str, ...]] = ("step", "action")

  step: int
  action: str
  episode_id: str = ""
  fallback: bool = False
  reward: float = 0.0
  done: bool = False
  valid_action: bool = True
  feedback: str = ""
  progression: float = 0.0
  achievements: list[str] = dataclasses.field(default_factory=list)
  unlocked: list[str] = dataclasses.field(default_factory=list)
  observation: str | None = None
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class End(_Record):
  """The last line of a finished episode.

  Attributes:
    unlock_steps: achievement/milestone -> the step at which it unlocked.
    replay: `{"seed", "env_settings", "actions"}`: replaying `actions` on
      `make_env(game, 1, **env_settings)` reset with `seed` gives the episode.
  """

  TYPE: ClassVar[str] = "end"
  REQUIRED: ClassVar[tuple[str, ...]] = ()

  episode_id: str = ""
  stats: dict[str, Any] = dataclasses.field(default_factory=dict)
  metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
  error: str | None = None
  final_memory: dict[str, str] | None = None
  unlock_steps: dict[str, int] = dataclasses.field(default_factory=dict)
  replay: dict[str, Any] = dataclasses.field(default_factory=dict)
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)


RECORD_TYPES: dict[str, type] = {c.TYPE: c for c in (Header, Turn, Step, End)}
Record = Header | Turn | Step | End


def record_from_json(data: Mapping[str, Any]) -> Record:
  """The typed record of one JSON line."""
  kind = data.get("type") if isinstance(data, Mapping) else None
  cls = RECORD_TYPES.get(kind)  # type: ignore[arg-type]
  if cls is None:
    raise TrajectoryError(f"unknown record type {kind!r}")
  return cls.from_json(data)


@dataclasses.dataclass(frozen=True)
class Trajectory:
  """One episode as read from its file.

  `traj["header"]`, `["turns"]`, `["steps"]`, `["end"]` give the JSON forms,
  for callers that predate the typed records.
  """

  path: str
  header: Header
  turns: tuple[Turn, ...]
  steps: tuple[Step, ...]
  end: End | None
  torn: bool = False  # a torn last line was skipped

  @property
  def schema_version(self) -> int:
    return self.header.schema_version

  @property
  def episode_id(self) -> str:
    return self.header.episode_id

  @property
  def finished(self) -> bool:
    return self.end is not None

  @property
  def progression(self) -> float:
    """Final progression (the end's stats, else the last step's)."""
    if self.end is not None and "progression" in self.end.stats:
      return float(self.end.stats["progression"])
    return float(self.steps[-1].progression) if self.steps else 0.0

  def actions(self) -> list[str]:
    """The actions taken, one per env step."""
    return [s.action for s in self.steps]

  def turn(self, step: int, phase: str, turn: int) -> Turn:
    """The turn with this key (a two-model commit turn shares PLAN turn 0's: PLAN's comes first)."""
    for t in self.turns:
      if t.key == (step, phase, turn):
        return t
    raise KeyError(f"{self.path}: no turn with step={step} phase={phase!r} turn={turn}")

  def turns_of_step(self, step: int) -> list[Turn]:
    return [t for t in self.turns if t.step == step]

  def unlock_steps(self) -> dict[str, int]:
    """Achievement/milestone -> step at which it unlocked (derived for version-0 files)."""
    if self.end is not None and self.end.unlock_steps:
      return dict(self.end.unlock_steps)
    out: dict[str, int] = {}
    for s in self.steps:
      for a in (s.unlocked or s.achievements):
        out.setdefault(a, s.step)
    return out

  def replay_spec(self) -> dict[str, Any]:
    """`{"game", "seed", "env_settings", "actions"}`: what `automem.credit` replays."""
    h = self.header
    settings = dict(h.env_settings)
    if not settings and h.task and h.task != h.game:
      settings["task"] = h.task
    return {"game": h.game, "seed": int(h.seed), "env_settings": settings,
            "actions": self.actions()}

  def memory_before(self, step: int, phase: str, turn: int) -> dict[str, str]:
    """The memory files just before a turn ran, rebuilt from the initial files and diffs."""
    if self.header.initial_memory is None:
      raise TrajectoryError(f"{self.path}: no initial memory in the header")
    snap = dict(self.header.initial_memory)
    for _, t, diff in self.memory_changes():
      if t is not None and t.key == (step, phase, turn):
        return snap
      snap = apply_diff(snap, diff)
    raise KeyError(f"{self.path}: no turn with step={step} phase={phase!r} turn={turn}")

  def memory_changes(self) -> Iterator[tuple[int, Turn | None, dict[str, Any]]]:
    """Every recorded memory change in the order it happened, as (step, turn, diff): a
    turn's own `memory_diff` (turn set), or the harness's (turn None: after-LOG hooks on a
    turn's `harness_diff`, step_start hooks on a step's after its action). Everything that
    follows memory through an episode applies these, so line numbers stay in step."""
    between, done = _harness_diffs(self.steps), -1
    for t in self.turns:  # file order is the order the turns ran in
      for s in range(done, t.step):  # the harness's changes after earlier steps' actions
        if between.get(s):
          yield s, None, between[s]
      done = max(done, t.step)
      yield t.step, t, t.memory_diff or {}
      if t.extra.get("harness_diff"):
        yield t.step, None, t.extra["harness_diff"]
    for s in sorted(k for k in between if k >= done):  # after the last turn's step
      yield s, None, between[s]

  def memory_after(self, step: int, phase: str, turn: int) -> dict[str, str]:
    """The memory files just after a turn ran."""
    return apply_diff(self.memory_before(step, phase, turn),
                      self.turn(step, phase, turn).memory_diff)

  def __getitem__(self, key: str) -> Any:
    if key == "header":
      return self.header.to_json()
    if key == "turns":
      return [t.to_json() for t in self.turns]
    if key == "steps":
      return [s.to_json() for s in self.steps]
    if key == "end":
      return None if self.end is None else self.end.to_json()
    raise KeyError(key)


class TrajectoryWriter:
  """Appends records to one episode's file; `flush()` after each env step.

  Records may be typed or their JSON form; each is checked against the
  schema (a record that does not fit raises `TrajectoryError`, nothing is
  written for it).
  """

  def __init__(self, path: str | os.PathLike[str], header: Header | Mapping[str, Any]):
    self.path = os.fspath(path)
    if not isinstance(header, Header):
      header = Header.from_json({**header, "type": "header"})
    if header.schema_version == 0:
      header = dataclasses.replace(header, schema_version=SCHEMA_VERSION)
    os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
    self._file: IO[str] | None = open(self.path, "w", encoding="utf-8")  # noqa: SIM115
    self.write([header])
    self.flush()

  def write(self, records: Iterable[Record | Mapping[str, Any]]) -> None:
    if self._file is None:
      raise ValueError(f"trajectory {self.path} is closed")
    lines = []
    for rec in records:
      typed = rec if isinstance(rec, Header | Turn | Step | End) else record_from_json(rec)
      lines.append(json.dumps(typed.to_json(), ensure_ascii=False) + "\n")
    self._file.write("".join(lines))

  def flush(self) -> None:
    if self._file is not None:
      self._file.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.flush()
      os.fsync(self._file.fileno())
      self._file.close()
      self._file = None


def write_trajectory(path: str | os.PathLike[str], header: Header,
                     records: Iterable[Record]) -> None:
  """Writes a whole episode at once (tests, generators, converters)."""
  w = TrajectoryWriter(path, header)
  try:
    w.write(records)
  finally:
    w.close()


def iter_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
  """The JSON records of a trajectory file; a torn last line (a killed writer) is skipped.

  Raises:
    TrajectoryError: a line other than the last is not JSON.
  """
  with open(path, encoding="utf-8") as f:
    pending: tuple[int, str] | None = None
    for lineno, line in enumerate(f, 1):
      if pending is not None:
        yield _parse_line(path, *pending)
      pending = (lineno, line) if line.strip() else None
    if pending is not None:
      lineno, line = pending
      if not line.endswith("\n"):
        return  # half-written line of a killed run
      try:
        rec = json.loads(line)
      except json.JSONDecodeError:
        return  # cut short mid-record
      yield rec


def _parse_line(path: Any, lineno: int, line: str) -> dict[str, Any]:
  try:
    rec = json.loads(line)
  except json.JSONDecodeError as e:
    raise TrajectoryError(f"{os.fspath(path)}:{lineno}: not JSON ({e})") from e
  if not isinstance(rec, dict):
    raise TrajectoryError(f"{os.fspath(path)}:{lineno}: a record must be a JSON object")
  return rec


def read_trajectory(path: str | os.PathLike[str]) -> Trajectory:
  """Reads one episode's file into a `Trajectory` (the one reader every consumer uses).

  Raises:
    TrajectoryError: no header, a broken line before the last, a record that
      does not fit the schema, or a schema newer than this code.
  """
  path = os.fspath(path)
  header: Header | None = None
  turns: list[Turn] = []
  steps: list[Step] = []
  end: End | None = None
  n_lines = 0
  with open(path, encoding="utf-8") as f:
    n_lines = sum(1 for line in f if line.strip())
  n_read = 0
  for n_read, rec in enumerate(iter_records(path), 1):
    try:
      typed = record_from_json(rec)
    except TrajectoryError as e:
      raise TrajectoryError(f"{path}: record {n_read}: {e}") from e
    if isinstance(typed, Header):
      if typed.schema_version > SCHEMA_VERSION:
        raise TrajectoryError(f"{path}: schema version {typed.schema_version} is newer than "
                              f"this code's ({SCHEMA_VERSION})")
      header = typed
    elif isinstance(typed, Turn):
      turns.append(typed)
    elif isinstance(typed, Step):
      steps.append(typed)
    else:
      end = typed
  if header is None:
    raise TrajectoryError(f"{path}: no header record")
  return Trajectory(path=path, header=header, turns=tuple(turns), steps=tuple(steps), end=end,
                    torn=n_read < n_lines)


def trajectory_files(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]
                     ) -> list[str]:
  """Expands run dirs, `trajectories/` dirs and files into a sorted list of JSONL files."""
  if isinstance(paths, str | os.PathLike):
    paths = [paths]
  out: list[str] = []
  for p in paths:
    p = os.fspath(p)
    if os.path.isdir(os.path.join(p, "trajectories")):
      p = os.path.join(p, "trajectories")
    if os.path.isdir(p):
      out.extend(os.path.join(p, n) for n in sorted(os.listdir(p)) if n.endswith(".jsonl"))
    elif os.path.isfile(p):
      out.append(p)
    else:
      raise FileNotFoundError(f"no trajectory file or directory at {p!r}")
  return out


def read_trajectories(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
                      *, finished_only: bool = False) -> list[Trajectory]:
  """Every trajectory under run dirs / `trajectories/` dirs / files, sorted by path."""
  out = [read_trajectory(p) for p in trajectory_files(paths)]
  return [t for t in out if t.finished] if finished_only else out


def is_finished(path: str | os.PathLike[str]) -> bool:
  """Whether the file ends with an "end" record (a complete episode); reads only its tail."""
  try:
    with open(path, "rb") as f:
      f.seek(0, os.SEEK_END)
      size = f.tell()
      f.seek(max(0, size - 1_000_000))
      lines = f.read().decode("utf-8", errors="replace").splitlines(keepends=True)
  except OSError:
    return False
  for line in reversed(lines):
    if not line.strip():
      continue
    if not line.endswith("\n"):
      return False
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      return False
    return isinstance(record, dict) and record.get("type") == "end"
  return False


def _harness_diffs(steps: Iterable[Step]) -> dict[int, dict[str, Any]]:
  """Step -> the memory changes the harness made after its action (MemoryStructure hooks)."""
  return {s.step: s.extra["harness_diff"] for s in steps if s.extra.get("harness_diff")}


def replay_memory(trajectory: Trajectory | Mapping[str, Any], store: MemoryStore,
                  structure: Any = None) -> list[str]:
  """Re-executes every recorded turn's completion on `store` and checks it.

  The store must be fresh (the episode's initial files). For each turn the
  completion is parsed again, the recorded commands (the ones the agent
  ran) are executed, and the store's change is compared with the recorded
  `memory_diff`; at the end the store is compared with the end record's
  `final_memory`.

  Returns:
    A list of mismatches (empty when the trajectory replays exactly).
  """
  if not isinstance(trajectory, Trajectory):
    trajectory = Trajectory(
        path="", header=Header.from_json(trajectory.get("header") or {"episode_id": ""}),
        turns=tuple(Turn.from_json(t) for t in trajectory["turns"]), steps=(),
        end=None if trajectory.get("end") is None else End.from_json(trajectory["end"]))
  problems: list[str] = []
  for _, turn, harness in trajectory.memory_changes():
    if turn is None:  # the harness's own changes (hooks): applied as recorded
      store.restore(apply_diff(store.snapshot(), harness))
      continue
    where = f"step {turn.step} {turn.phase} turn {turn.turn}"
    parsed = parse_commands(turn.completion)
    by_span = {tuple(item.span): item for item in parsed.items}
    to_run = []
    for rec in turn.commands:
      item = by_span.get(tuple(rec["span"]))
      if item is None:
        problems.append(f"{where}: recorded command at {rec['span']} not found by the parser")
        continue
      to_run.append(item)
    before = store.snapshot()
    results = execute(store, to_run, phase=turn.phase, structure=structure) if to_run else []
    for rec, res in zip(turn.commands, results):
      if res.control:
        continue  # DONE / ACTION: interpreted by the agent, not the store
      if rec["ok"] != res.ok or rec["result"] != res.text:
        problems.append(f"{where}: {rec['op']} gave {res.text[:80]!r}, recorded "
                        f"{rec['result'][:80]!r}")
    diff = diff_snapshots(before, store.snapshot())
    if diff != (turn.memory_diff or diff):
      problems.append(f"{where}: memory diff differs from the recorded one")
    try:
      if apply_diff(before, turn.memory_diff) != store.snapshot():
        problems.append(f"{where}: the recorded diff does not reproduce the store")
    except ValueError as e:
      problems.append(f"{where}: recorded diff does not apply: {e}")
  end = trajectory.end
  if end is not None and end.final_memory is not None and end.final_memory != store.snapshot():
    problems.append("final memory differs from the replayed store")
  return problems
