"""The paper's table per game: versions with n, progression, 95% CI and paired differences.

A version is one run directory (an evaluation of one structure / model). The
first version is the baseline (v0): every other version's paired difference
pairs its episodes with v0's on the same (task, seed), so the seed-to-seed
spread cancels. Episodes that ended with an error are counted apart and not
scored, as in `automem.rollout.summarize` (whose numbers these are).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
from collections.abc import Sequence
from typing import Any

from automem.report import traces
from automem.report.behaviour import Behaviour, episode_behaviour
from automem.rollout.metrics import EpisodeMetrics, mean_ci95, summarize


@dataclasses.dataclass(frozen=True)
class Version:
  """One row source: a label ("v0", "v1", "+train") and its run directory."""

  label: str
  run_dir: str


@dataclasses.dataclass
class VersionData:
  """What the report reads of one version (finished episodes of the chosen seed set)."""

  version: Version
  infos: list[traces.EpisodeInfo]
  metrics: list[EpisodeMetrics]
  behaviour: dict[str, Behaviour]  # per game


def load_version(version: Version, seed_set: str = "test") -> VersionData:
  """Reads a version's finished episodes (of `seed_set`; "" = every set)."""
  infos, metrics = [], []
  behaviour: dict[str, Behaviour] = {}
  for path in traces.trajectory_paths(version.run_dir):
    info = traces.episode_info(path)
    if not info.finished or (seed_set and info.seed_set != seed_set):
      continue
    traj = traces.read_episode(path)
    infos.append(info)
    metrics.append(EpisodeMetrics.from_dict(traj["end"]["metrics"]))
    behaviour[info.game] = behaviour.get(info.game, Behaviour()).add(episode_behaviour(traj))
  return VersionData(version, infos, metrics, behaviour)


def _paired(base: VersionData, other: VersionData, game: str) -> dict[str, Any]:
  def scores(d: VersionData) -> dict[tuple[str, int], float]:
    return {(i.task, i.seed): i.progression for i in d.infos if i.game == game and not i.errored}

  a, b = scores(base), scores(other)
  keys = sorted(set(a) & set(b))
  diffs = [b[k] - a[k] for k in keys]
  mean, half = mean_ci95(diffs)
  return {"pairs": len(keys), "diff_mean": mean, "diff_ci95": half}


def version_table(data: Sequence[VersionData]) -> dict[str, list[dict[str, Any]]]:
  """Per game, one row per version: n, errors, progression mean and CI, paired diff vs v0."""
  games = sorted({i.game for d in data for i in d.infos})
  out: dict[str, list[dict[str, Any]]] = {}
  for game in games:
    rows = []
    for d in data:
      summary = summarize([m for m in d.metrics if m.game == game])["games"].get(game)
      if summary is None:
        continue
      row = {"version": d.version.label, "run_dir": d.version.run_dir,
             "n": summary["episodes"] - summary["errors"], "errors": summary["errors"],
             "progression_mean": summary["progression_mean"],
             "progression_ci95": summary["progression_ci95"],
             "fallback_rate": summary["fallback_rate"], "quoted": False}
      if d is not data[0]:
        row.update({f"vs_{data[0].version.label}_{k}": v
                    for k, v in _paired(data[0], d, game).items()})
      rows.append(row)
    out[game] = rows
  return out


def behaviour_table(data: Sequence[VersionData]) -> dict[str, list[dict[str, Any]]]:
  """Per game, one row per version: the behavioural counts and rates."""
  out: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
  for d in data:
    for game, b in sorted(d.behaviour.items()):
      row = {"version": d.version.label, **dataclasses.asdict(b), **b.rates()}
      out[game].append(row)
  return dict(out)


def achievement_rates(data: Sequence[VersionData], game: str) -> dict[str, dict[str, float]]:
  """Per version, the share of `game`'s scored episodes reaching each achievement."""
  out = {}
  for d in data:
    eps = [i for i in d.infos if i.game == game and not i.errored]
    counts = collections.Counter(a for i in eps for a in set(i.achievements))
    out[d.version.label] = {k: v / len(eps) for k, v in sorted(counts.items())} if eps else {}
  return out


REFERENCE_KINDS = ("paper", "leaderboard")
REFERENCES_PATH = os.path.join(os.path.dirname(__file__), "references.json")


def _is_number(x: Any) -> bool:
  return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def check_references(refs: Any) -> None:
  """Raises ValueError naming the first bad row of a `references.json` document.

  A row has a non-empty `version` and `source`, a `kind` of `REFERENCE_KINDS`,
  a numeric `progression_mean` in [0, 100], and optionally `progression_se`
  (>= 0), `n` (a positive integer) and `setting` (where in the source). Text
  fields hold no "|" or newline (they become table cells).
  """
  games = refs.get("games") if isinstance(refs, dict) else None
  if not isinstance(games, dict):
    raise ValueError('references: expected {"games": {game: [row, ...]}}')
  for game, rows in games.items():
    if not isinstance(rows, list):
      raise ValueError(f"references[{game!r}]: expected a list of rows")
    for i, row in enumerate(rows):
      where = f"references[{game!r}][{i}]"
      if not isinstance(row, dict):
        raise ValueError(f"{where}: expected an object")
      for key in ("version", "source", "setting"):
        text = row.get(key, "-" if key == "setting" else None)  # setting is optional
        if not isinstance(text, str) or not text.strip() or "|" in text or "\n" in text:
          raise ValueError(f"{where}: {key} must be non-empty text without '|' or newlines")
      if row.get("kind") not in REFERENCE_KINDS:
        raise ValueError(f"{where}: kind {row.get('kind')!r} is not one of {REFERENCE_KINDS}")
      mean = row.get("progression_mean")
      if not _is_number(mean) or not 0 <= mean <= 100:
        raise ValueError(f"{where}: progression_mean {mean!r} is not a number in [0, 100]")
      se = row.get("progression_se", 0.0)
      if not _is_number(se) or se < 0:
        raise ValueError(f"{where}: progression_se {se!r} is not a number >= 0")
      n = row.get("n", 1)
      if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"{where}: n {n!r} is not a positive integer")


def reference_rows(path: str = REFERENCES_PATH) -> dict[str, list[dict[str, Any]]]:
  """The quoted (not measured) rows per game, from `references.json` (checked first)."""
  with open(path, encoding="utf-8") as f:
    refs = json.load(f)
  check_references(refs)
  return {game: [{**r, "quoted": True} for r in rows] for game, rows in refs["games"].items()}


def fmt(x: Any, digits: int = 2) -> str:
  """A number for a table cell ("-" for None/NaN)."""
  if x is None or (isinstance(x, float) and math.isnan(x)):
    return "-"
  if isinstance(x, float):
    return f"{x:.{digits}f}"
  return str(x)
