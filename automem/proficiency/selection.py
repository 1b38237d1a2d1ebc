"""Which trajectory turns Loop 2 trains on: the `selected_turns.jsonl` format.

A selection file has one JSON object per line, naming one LLM turn of one
trajectory file (see the trajectory contract in DESIGN.md):

  {"trajectory": "trajectories/ep-0007.jsonl",  # relative to this file's dir, or absolute
   "step": 12, "phase": "log", "turn": 0,       # which turn of that episode
   "commands": [0, 2],   # optional: indices into the turn's `commands` to train on
   "weight": 1.0,        # optional: loss weight of this turn's command tokens
   "score": 0.7}         # optional: kept by whoever selected it, ignored here

The decision-selection step writes these; until it exists,
`select_log_turns` picks every LOG turn of a set of trajectories.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

from automem.agent.trajectory import read_trajectory, trajectory_files
from automem.utils.files import tmp_path

SELECTION_FILE = "selected_turns.jsonl"


@dataclasses.dataclass(frozen=True)
class TurnRef:
  """A reference to one LLM turn in a trajectory file."""

  trajectory: str  # path of the episode's JSONL file
  step: int
  phase: str  # "log" | "plan"
  turn: int
  commands: tuple[int, ...] | None = None  # command indices to train on; None = all eligible
  weight: float = 1.0
  score: float | None = None

  def to_json(self, base_dir: str | None = None) -> dict[str, Any]:
    path = self.trajectory
    if base_dir is not None:
      path = os.path.relpath(os.path.abspath(path), os.path.abspath(base_dir))
    out: dict[str, Any] = {"trajectory": path, "step": self.step, "phase": self.phase,
                           "turn": self.turn}
    if self.commands is not None:
      out["commands"] = list(self.commands)
    if self.weight != 1.0:
      out["weight"] = self.weight
    if self.score is not None:
      out["score"] = self.score
    return out


@dataclasses.dataclass(frozen=True)
class TurnRecord:
  """The parts of a trajectory turn the dataset needs."""

  episode_id: str
  step: int
  phase: str
  turn: int
  messages: list[dict[str, str]]
  completion: str
  commands: list[dict[str, Any]]  # {"op", "args", "span": [s, e], "ok", ...}
  selected: tuple[int, ...] | None
  weight: float


def write_selected_turns(path: str, refs: Iterable[TurnRef]) -> int:
  """Writes a selection file; paths are stored relative to its directory."""
  base = os.path.dirname(os.path.abspath(path))
  os.makedirs(base, exist_ok=True)
  n = 0
  tmp = tmp_path(path)
  with open(tmp, "w") as f:
    for ref in refs:
      f.write(json.dumps(ref.to_json(base)) + "\n")
      n += 1
  os.replace(tmp, path)
  return n


def read_selected_turns(path: str) -> list[TurnRef]:
  """Reads a selection file; relative trajectory paths resolve against its directory."""
  base = os.path.dirname(os.path.abspath(path))
  refs = []
  with open(path) as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        d = json.loads(line)
        traj = d["trajectory"]
        refs.append(TurnRef(
            trajectory=traj if os.path.isabs(traj) else os.path.join(base, traj),
            step=int(d["step"]), phase=str(d.get("phase", "log")), turn=int(d["turn"]),
            commands=None if d.get("commands") is None else tuple(int(i) for i in d["commands"]),
            weight=float(d.get("weight", 1.0)),
            score=None if d.get("score") is None else float(d["score"])))
      except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}:{lineno}: bad selection line ({e}): {line[:200]!r}") from e
  return refs


def _read_trajectory(path: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
  """(header, turns) in JSON form, through the one trajectory reader."""
  traj = read_trajectory(path)
  return traj.header.to_json(), [t.to_json() for t in traj.turns]


def select_log_turns(paths: str | Sequence[str], phases: Sequence[str] = ("log",)) -> list[TurnRef]:
  """Every turn of the given phases in the given trajectories (the no-selection default)."""
  refs = []
  for path in trajectory_files(paths):
    _, turns = _read_trajectory(path)
    refs.extend(TurnRef(trajectory=path, step=int(t["step"]), phase=t["phase"], turn=int(t["turn"]))
                for t in turns if t.get("phase") in phases)
  return refs


def load_turns(refs: Sequence[TurnRef]) -> list[TurnRecord]:
  """Resolves references into turn records, reading each trajectory file once."""
  by_file: dict[str, dict[tuple[int, str, int], dict[str, Any]]] = {}
  episode_of: dict[str, str] = {}
  out = []
  for ref in refs:
    if ref.trajectory not in by_file:
      header, turns = _read_trajectory(ref.trajectory)
      keyed: dict[tuple[int, str, int], dict[str, Any]] = {}
      for t in turns:  # a two-model commit turn shares its key with PLAN turn 0: keep PLAN's
        keyed.setdefault((int(t["step"]), t["phase"], int(t["turn"])), t)
      by_file[ref.trajectory] = keyed
      episode_of[ref.trajectory] = str(header.get("episode_id") or (
          turns[0]["episode_id"] if turns else os.path.basename(ref.trajectory)))
    rec = by_file[ref.trajectory].get((ref.step, ref.phase, ref.turn))
    if rec is None:
      raise KeyError(f"{ref.trajectory}: no turn with step={ref.step} phase={ref.phase!r} "
                     f"turn={ref.turn}")
    out.append(TurnRecord(
        episode_id=str(rec.get("episode_id", episode_of[ref.trajectory])), step=ref.step,
        phase=ref.phase, turn=ref.turn, messages=list(rec["messages"]),
        completion=str(rec["completion"]), commands=list(rec.get("commands") or []),
        selected=ref.commands, weight=ref.weight))
  return out
