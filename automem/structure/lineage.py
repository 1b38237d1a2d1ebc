"""The lineage: one JSON line per evaluated candidate, the loop's memory and audit trail.

A record holds the round, the candidate id, its parent, the incumbent it
raced, the changes and note, which proposer made it (and the transcript
path), per-seed results of every arm it raced with, the decision with the
statistics that decided it, and per-objective means for the Pareto front.
The loop's state (incumbent, accepted versions, tried changes) is a fold
over these lines, so a resumed loop needs nothing else.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from automem.rollout.metrics import EpisodeMetrics, is_error


def read_lineage(path: str) -> list[dict[str, Any]]:
  """The records so far (a torn last line from a kill is ignored)."""
  if not os.path.exists(path):
    return []
  out = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      if line.endswith("\n"):
        out.append(json.loads(line))
  return out


def append_lineage(path: str, records: Iterable[Mapping[str, Any]]) -> None:
  """Appends records and syncs (one write per round: all or, after a kill, a torn tail)."""
  text = "".join(json.dumps(dict(r), sort_keys=True, default=str) + "\n" for r in records)
  with open(path, "a", encoding="utf-8") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())


@dataclasses.dataclass
class LoopState:
  """What the lineage says: the incumbent, accepted versions in order, tried changes."""

  incumbent: str = "v0"
  accepted: list[str] = dataclasses.field(default_factory=lambda: ["v0"])
  rounds_done: int = 0
  tried: dict[str, set[str]] = dataclasses.field(default_factory=dict)  # parent -> change keys
  objectives: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
  continued: set[str] = dataclasses.field(default_factory=set)  # candidates given a continuation
  episodes: int = 0
  labels: dict[str, str] = dataclasses.field(default_factory=lambda: {"v0": "v0"})  # id -> vK


def fold(records: Sequence[Mapping[str, Any]]) -> LoopState:
  s = LoopState()
  for r in records:
    s.rounds_done = max(s.rounds_done, int(r["round"]) + 1)
    s.episodes += int(r.get("episodes", 0))
    s.tried.setdefault(r.get("base") or r["parent"], set()).add(r["change_key"])
    if r.get("objectives"):
      s.objectives[r["candidate"]] = r["objectives"]
    if r.get("incumbent_objectives"):
      s.objectives.setdefault(r["incumbent"], r["incumbent_objectives"])
    if r.get("continuation_of"):
      s.continued.add(r["continuation_of"])
    if r["decision"] == "accepted":
      s.incumbent = r["candidate"]
      s.accepted.append(r["candidate"])
      s.labels[r["candidate"]] = r["version"]
  return s


def objectives(records: Sequence[EpisodeMetrics], game: str) -> dict[str, float]:
  """Per-objective means: per task (MiniHack), per achievement (Crafter), else progression."""
  records = [r for r in records if not is_error(r)]
  if not records:
    return {}
  if game == "minihack":
    by: dict[str, list[float]] = collections.defaultdict(list)
    for r in records:
      by[r.task].append(r.progression)
    return {k: sum(v) / len(v) for k, v in sorted(by.items())}
  if game in ("crafter", "crafter_original"):
    counts: collections.Counter[str] = collections.Counter()
    for r in records:
      counts.update(set(r.stats.get("achievements", ())))
    out = {k: v / len(records) for k, v in sorted(counts.items())}
    out["progression"] = sum(r.progression for r in records) / len(records)
    return out
  return {"progression": sum(r.progression for r in records) / len(records)}


def pareto_front(objs: Mapping[str, Mapping[str, float]]) -> list[str]:
  """Versions no other version dominates (missing objectives count as 0)."""
  keys = sorted({k for o in objs.values() for k in o})

  def dominates(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    ge = all(a.get(k, 0.0) >= b.get(k, 0.0) for k in keys)
    return ge and any(a.get(k, 0.0) > b.get(k, 0.0) for k in keys)

  return sorted(v for v, o in objs.items()
                if not any(dominates(p, o) for w, p in objs.items() if w != v))


def pick_parent(state: LoopState, round_index: int, every: int, seed: int,
                candidates: Sequence[str]) -> str:
  """The incumbent, or every `every` rounds a version sampled from the Pareto front."""
  if every <= 0 or round_index == 0 or round_index % every:
    return state.incumbent
  objs = {v: o for v, o in state.objectives.items() if v in set(candidates)}
  front = pareto_front(objs) if objs else []
  if not front:
    return state.incumbent
  return random.Random(seed * 7919 + round_index).choice(front)
