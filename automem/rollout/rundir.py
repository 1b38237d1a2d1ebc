"""The run directory of an evaluation, and what a resumed run finds in it.

```
<workdir>/
  config.json                  the config the run was started with
  structures/<game>.json       the exact MemoryStructure each game used
  trajectories/<episode>.jsonl one file per episode, flushed every env step
  memory/<episode>/            the episode's memory files (its final state
                               once the episode has ended)
  metrics/episodes.jsonl       one EpisodeMetrics record per finished episode
  metrics/retried.jsonl        episodes replayed after an error end (id, error, time)
  summary.json                 the run summary (see rollout.metrics)
  tb/                          TensorBoard events
```

A run started again on the same workdir keeps every finished episode (its
trajectory has a valid "end" line) and plays every other one from the start:
unfinished ones, ones whose end record is malformed (no metrics, a garbage
line before it), and by default ones that ended in an infrastructure error
(server, engine, env), which are logged in `metrics/retried.jsonl`.
Temp files of a killed run (`*.tmp<pid>`) are swept when the directory is opened.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from absl import logging

from automem.agent.trajectory import is_finished, read_trajectory
from automem.rollout.metrics import EpisodeMetrics, is_error
from automem.utils.files import sweep_stale_tmp, tmp_path

EpisodeStatus = Literal["finished", "errored", "unfinished"]


@dataclasses.dataclass(frozen=True)
class EpisodeState:
  """What a run directory holds for one episode.

  Attributes:
    status: "finished" (ended by play), "errored" (ended by an
      infrastructure error: server, engine, env) or "unfinished" (no end
      record, or a malformed one).
    metrics: the end record's metrics (finished and errored episodes).
    error: the error of an errored episode, or why an end record was unusable.
  """

  status: EpisodeStatus
  metrics: EpisodeMetrics | None = None
  error: str = ""

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def episode_id(game: str, task: str, seed: int) -> str:
  """A file-name-safe, run-unique id: `<game>-<task>-<seed>`."""
  task_part = "" if task == game else "-" + _UNSAFE.sub("_", task)
  return f"{_UNSAFE.sub('_', game)}{task_part}-{seed}"


def atomic_write_json(path: str, data: Any) -> None:
  tmp = tmp_path(path)
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
    for sub in ("", "metrics", "structures"):
      sweep_stale_tmp(os.path.join(self.root, sub))

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

  def episode_state(self, episode: str) -> EpisodeState:
    """The episode's state; a malformed end record makes it unfinished, never an exception."""
    path = self.trajectory_path(episode)
    if not is_finished(path):
      return EpisodeState("unfinished")
    try:
      end = read_trajectory(path)["end"]
      metrics = EpisodeMetrics.from_dict(end["metrics"])
      float(metrics.progression)  # a usable record has a numeric progression
      errored = is_error(metrics)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
      why = f"malformed trajectory {path}: {type(e).__name__}: {e}"
      logging.warning("%s; the episode will be played again", why)
      return EpisodeState("unfinished", error=why)
    if errored:
      return EpisodeState("errored", metrics, str(end.get("error") or metrics.stats.get("error")))
    return EpisodeState("finished", metrics)

  def states(self, episodes: Iterable[str]) -> dict[str, EpisodeState]:
    return {e: self.episode_state(e) for e in episodes}

  def finished(self, episodes: Iterable[str], *, keep_errored: bool = True) -> set[str]:
    """The episodes among `episodes` that a resumed run keeps.

    Args:
      episodes: episode ids.
      keep_errored: also keep episodes that ended in an infrastructure error.
    """
    keep = ("finished", "errored") if keep_errored else ("finished",)
    return {e for e, st in self.states(episodes).items() if st.status in keep}

  def episode_metrics(self, episodes: Iterable[str]) -> list[EpisodeMetrics]:
    """The metrics of ended episodes (errored ones too), read from their end lines."""
    return [st.metrics for st in self.states(episodes).values() if st.metrics is not None]

  def log_retry(self, episode: str, error: str) -> None:
    """Records that an errored episode is played again."""
    with open(self.path("metrics", "retried.jsonl"), "a", encoding="utf-8") as f:
      f.write(json.dumps({"episode_id": episode, "error": error, "time": time.time()}) + "\n")

  def retried(self) -> set[str]:
    """Ids of every episode this run directory has replayed after an error."""
    out = set()
    try:
      with open(self.path("metrics", "retried.jsonl"), encoding="utf-8") as f:
        for line in f:
          try:
            out.add(json.loads(line)["episode_id"])
          except (ValueError, KeyError, TypeError):
            continue  # a torn line of a killed run
    except FileNotFoundError:
      pass
    return out

  def append_metrics(self, record: EpisodeMetrics) -> None:
    """Adds one finished episode's line while the run goes on (rewritten at the end)."""
    with open(self.path("metrics", "episodes.jsonl"), "a", encoding="utf-8") as f:
      f.write(json.dumps(record.to_dict(), sort_keys=True) + "\n")

  def write_metrics(self, records: Iterable[EpisodeMetrics]) -> None:
    path = self.path("metrics", "episodes.jsonl")
    tmp = tmp_path(path)
    with open(tmp, "w", encoding="utf-8") as f:
      for r in records:
        f.write(json.dumps(r.to_dict(), sort_keys=True) + "\n")
    os.replace(tmp, path)

  def write_summary(self, summary: Mapping[str, Any]) -> None:
    atomic_write_json(self.path("summary.json"), dict(summary))
