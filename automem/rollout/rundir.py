"""The run directory of an evaluation, and what a resumed run finds in it.

```
<workdir>/
  config.json                  the config the run was started with
  structures/<game>.json       the exact MemoryStructure each game used
  trajectories/<episode>.jsonl one file per episode, flushed every env step
  memory/<episode>/            the episode's memory files (its final state
                               once the episode has ended)
  metrics/episodes.jsonl       one EpisodeMetrics record per finished episode
  summary.json                 the run summary (see rollout.metrics)
  tb/                          TensorBoard events
```

A run started again on the same workdir keeps every finished episode (its
trajectory has an "end" line) and plays every other one from the start.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from automem.agent.trajectory import is_finished, read_trajectory
from automem.rollout.metrics import EpisodeMetrics

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def episode_id(game: str, task: str, seed: int) -> str:
  """A file-name-safe, run-unique id: `<game>-<task>-<seed>`."""
  task_part = "" if task == game else "-" + _UNSAFE.sub("_", task)
  return f"{_UNSAFE.sub('_', game)}{task_part}-{seed}"


def atomic_write_json(path: str, data: Any) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(data, f, indent=2, sort_keys=True, default=str)
    f.write("\n")
  os.replace(tmp, path)


class RunDir:
  """Paths and bookkeeping of one run directory."""

  def __init__(self, root: str | os.PathLike[str]):
    self.root = os.path.abspath(os.fspath(root))
    for sub in ("trajectories", "memory", "metrics", "structures"):
      os.makedirs(os.path.join(self.root, sub), exist_ok=True)

  def path(self, *parts: str) -> str:
    return os.path.join(self.root, *parts)

  def trajectory_path(self, episode: str) -> str:
    return self.path("trajectories", f"{episode}.jsonl")

  def memory_dir(self, episode: str) -> str:
    return self.path("memory", episode)

  def write_config(self, config: Mapping[str, Any]) -> None:
    atomic_write_json(self.path("config.json"), dict(config))

  def write_structure(self, game: str, structure: Mapping[str, Any]) -> None:
    atomic_write_json(self.path("structures", f"{game}.json"), dict(structure))

  def finished(self, episodes: Iterable[str]) -> set[str]:
    """The episodes among `episodes` whose trajectory is complete."""
    return {e for e in episodes if is_finished(self.trajectory_path(e))}

  def episode_metrics(self, episodes: Iterable[str]) -> list[EpisodeMetrics]:
    """The metrics of finished episodes, read from their trajectories' end lines."""
    out = []
    for e in episodes:
      path = self.trajectory_path(e)
      if not is_finished(path):
        continue
      end = read_trajectory(path)["end"]
      out.append(EpisodeMetrics.from_dict(end["metrics"]))
    return out

  def append_metrics(self, record: EpisodeMetrics) -> None:
    """Adds one finished episode's line while the run goes on (rewritten at the end)."""
    with open(self.path("metrics", "episodes.jsonl"), "a", encoding="utf-8") as f:
      f.write(json.dumps(record.to_dict(), sort_keys=True) + "\n")

  def write_metrics(self, records: Iterable[EpisodeMetrics]) -> None:
    path = self.path("metrics", "episodes.jsonl")
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
      for r in records:
        f.write(json.dumps(r.to_dict(), sort_keys=True) + "\n")
    os.replace(tmp, path)

  def write_summary(self, summary: Mapping[str, Any]) -> None:
    atomic_write_json(self.path("summary.json"), dict(summary))
