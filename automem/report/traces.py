"""Reading run directories: the one place the report, viewer and notebooks touch trajectories.

Everything goes through `automem.agent.trajectory`'s reader functions
(`iter_records`, `read_trajectory`, `is_finished`), so a change of the record
schema is adapted here and nowhere else. A run directory is what
`experiments/evaluate.py` writes (`trajectories/*.jsonl`, `summary.json`, ...).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from collections.abc import Iterator
from typing import Any

from automem.agent.trajectory import is_finished, iter_records, read_trajectory


@dataclasses.dataclass(frozen=True)
class EpisodeInfo:
  """What the tables need of one episode, from its header and end lines.

  Attributes:
    episode_id, game, task, seed, seed_set: what was played.
    structure: the structure label (e.g. "crafter-v0").
    finished: whether the trajectory has its end line.
    errored: the episode ended with an error (counted apart, not scored).
    progression: final progression in [0, 100] (0 for an unfinished episode).
    achievements: achievements or milestones reached.
    steps, fallback: env steps and fallback actions (from the end line's metrics).
    end_reason: why the episode ended ("" while unfinished).
    path: the trajectory file.
  """

  episode_id: str
  game: str
  task: str
  seed: int
  seed_set: str
  structure: str
  finished: bool
  errored: bool
  progression: float
  achievements: tuple[str, ...]
  steps: int
  fallback: int
  end_reason: str
  path: str


def trajectory_paths(run_dir: str) -> list[str]:
  """The run's trajectory files, sorted by episode id."""
  return sorted(glob.glob(os.path.join(run_dir, "trajectories", "*.jsonl")))


def is_run_dir(path: str) -> bool:
  return os.path.isdir(os.path.join(path, "trajectories"))


def read_episode(path: str) -> dict[str, Any]:
  """One whole trajectory as plain JSON records: `{"header", "turns", "steps", "end"}`."""
  traj = read_trajectory(path)
  return {key: traj[key] for key in ("header", "turns", "steps", "end")}


def iter_episode_records(path: str) -> Iterator[dict[str, Any]]:
  """The records of one trajectory in file order (for readers that must not hold them all)."""
  return iter_records(path)


def episode_info(path: str) -> EpisodeInfo:
  """The header and end line of one trajectory, read without keeping the turns."""
  header: dict[str, Any] = {}
  end: dict[str, Any] | None = None
  for rec in iter_records(path):
    kind = rec.get("type")
    if kind == "header":
      header = rec
    elif kind == "end":
      end = rec
  metrics = (end or {}).get("metrics") or {}
  stats = metrics.get("stats") or (end or {}).get("stats") or {}
  return EpisodeInfo(
      episode_id=str(header.get("episode_id", os.path.basename(path)[:-6])),
      game=str(header.get("game", "")), task=str(header.get("task", "")),
      seed=int(header.get("seed", -1)), seed_set=str(header.get("seed_set", "")),
      structure=str(header.get("structure_label", "")),
      finished=end is not None and is_finished(path),
      errored=stats.get("end_reason") == "error",
      progression=float(stats.get("progression", 0.0)),
      achievements=tuple(stats.get("achievements", ()) or ()),
      steps=int(metrics.get("env_steps", 0)), fallback=int(metrics.get("fallback_actions", 0)),
      end_reason=str(stats.get("end_reason", "") if end else ""), path=path)


def episodes(run_dir: str) -> list[EpisodeInfo]:
  """Every episode of a run directory (finished or not)."""
  return [episode_info(p) for p in trajectory_paths(run_dir)]


def read_json(path: str) -> Any:
  """A JSON file, or None when it does not exist."""
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """A JSONL file's records ([] when absent); a torn last line (a killed writer) is skipped."""
  if not os.path.exists(path):
    return []
  out = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      if line.endswith("\n") and line.strip():
        out.append(json.loads(line))
  return out
