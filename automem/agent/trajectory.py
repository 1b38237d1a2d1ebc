"""Trajectory files: one JSONL file per episode, the only thing the loops read.

Line 1 is the header (`type: "header"`: episode id, game, task, seed, seed
set, structure version, agent settings). Then, per env step, one line per
LLM turn (`type: "turn"`: phase, turn, role, messages, completion, parsed
commands with spans and results, action, reward, memory diff) and one
`type: "step"` line (the action taken, whether it was the fallback, reward,
env feedback, progression so far). The last line (`type: "end"`) holds the
final `EpisodeStats`, the episode's metrics and the final memory files; a
file without it is an unfinished episode (a killed run), which a resumed run
plays again from the start.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any

from automem.memory import MemoryStore, apply_diff, diff_snapshots, execute, parse_commands


class TrajectoryWriter:
  """Appends records to one episode's file; `flush()` after each env step."""

  def __init__(self, path: str | os.PathLike[str], header: Mapping[str, Any]):
    self.path = os.fspath(path)
    os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
    self._file: IO[str] | None = open(self.path, "w", encoding="utf-8")  # noqa: SIM115
    self.write([{"type": "header", **header}])
    self.flush()

  def write(self, records: Iterable[Mapping[str, Any]]) -> None:
    if self._file is None:
      raise ValueError(f"trajectory {self.path} is closed")
    for rec in records:
      self._file.write(json.dumps(rec, ensure_ascii=False) + "\n")

  def flush(self) -> None:
    if self._file is not None:
      self._file.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.flush()
      os.fsync(self._file.fileno())
      self._file.close()
      self._file = None


def iter_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
  """The records of a trajectory file; a torn last line (a killed writer) is skipped."""
  with open(path, encoding="utf-8") as f:
    for line in f:
      if not line.endswith("\n"):
        return  # half-written line of a killed run
      yield json.loads(line)


def read_trajectory(path: str | os.PathLike[str]) -> dict[str, Any]:
  """`{"header": {...}, "turns": [...], "steps": [...], "end": {...} | None}`."""
  out: dict[str, Any] = {"header": None, "turns": [], "steps": [], "end": None}
  for rec in iter_records(path):
    kind = rec.get("type")
    if kind == "header":
      out["header"] = rec
    elif kind == "turn":
      out["turns"].append(rec)
    elif kind == "step":
      out["steps"].append(rec)
    elif kind == "end":
      out["end"] = rec
  return out


def is_finished(path: str | os.PathLike[str]) -> bool:
  """Whether the file ends with an "end" record (a complete episode)."""
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
      return json.loads(line).get("type") == "end"
    except json.JSONDecodeError:
      return False
  return False


def replay_memory(trajectory: Mapping[str, Any], store: MemoryStore,
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
  problems: list[str] = []
  for turn in trajectory["turns"]:
    where = f"step {turn['step']} {turn['phase']} turn {turn['turn']}"
    parsed = parse_commands(turn["completion"])
    by_span = {tuple(item.span): item for item in parsed.items}
    to_run = []
    for rec in turn["commands"]:
      item = by_span.get(tuple(rec["span"]))
      if item is None:
        problems.append(f"{where}: recorded command at {rec['span']} not found by the parser")
        continue
      to_run.append(item)
    before = store.snapshot()
    results = execute(store, to_run, phase=turn["phase"], structure=structure) if to_run else []
    for rec, res in zip(turn["commands"], results):
      if res.control:
        continue  # DONE / ACTION: interpreted by the agent, not the store
      if rec["ok"] != res.ok or rec["result"] != res.text:
        problems.append(f"{where}: {rec['op']} gave {res.text[:80]!r}, recorded "
                        f"{rec['result'][:80]!r}")
    diff = diff_snapshots(before, store.snapshot())
    if diff != turn.get("memory_diff", diff):
      problems.append(f"{where}: memory diff differs from the recorded one")
    try:
      if apply_diff(before, turn.get("memory_diff", {})) != store.snapshot():
        problems.append(f"{where}: the recorded diff does not reproduce the store")
    except ValueError as e:
      problems.append(f"{where}: recorded diff does not apply: {e}")
  end = trajectory.get("end")
  if end is not None and end.get("final_memory") is not None \
      and end["final_memory"] != store.snapshot():
    problems.append("final memory differs from the replayed store")
  return problems
