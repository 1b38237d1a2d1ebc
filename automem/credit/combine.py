"""Combining selectors: filter, then rank, then weight; the selection files.

1. Candidates: every turn with a memory command to train, after the paper's
   deterministic post-processing (`filters.deterministic_candidates`).
2. Filters, in order: outcome filters keep a subset (`top_episodes`,
   `near_unlock`).
3. Scorers (`usage`, `requery`, `counterfactual`, `judge`) score the
   survivors. Each scorer's scores become percentiles in [0, 1] (ties share
   one); a turn's combined score is the weighted mean of the percentiles of
   the scorers that scored it. A turn no scorer scored (a scorer that skips
   it, a failed judge call) ranks last, just below the lowest scored turn,
   with combined score 0: silence never outranks a low score. Without any
   scores at all every turn gets 0.5. A scorer "chose" a turn when the turn
   is in its upper half.
4. Rank by combined score, keep the best `keep_fraction` (and those at or above
   `min_score`), optionally the same number per game (`balance_games`).
5. Weight: `min_weight + (max_weight - min_weight) * combined` (1.0 without
   scorers).

Outputs: `selected_turns.jsonl` in the trainer's format (see
`automem.proficiency.selection`) with per-turn `weight`, `score`, `scores`,
`selectors`, `reasons`, `spans`; and `selection_stats.json` (counts by game,
op and selector, overlap (Jaccard) and rank agreement (Spearman) between
selectors, what each stage dropped).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from scipy import stats as scipy_stats

from automem.agent.trajectory import Trajectory
from automem.credit import filters
from automem.credit.scored import ScoredTurn, TurnKey, by_path
from automem.utils.files import tmp_path

SCORERS = ("usage", "requery", "counterfactual", "judge")
FILTERS = ("top_episodes", "near_unlock")
STATS_FILE = "selection_stats.json"


@dataclasses.dataclass(frozen=True)
class SelectedTurn:
  """One turn of the selection, with everything that decided it."""

  turn: ScoredTurn  # the candidate (its commands are the ones trained)
  score: float  # combined, in [0, 1]
  weight: float
  scores: dict[str, float]  # raw score by scorer
  selectors: tuple[str, ...]  # filters it passed and scorers that chose it
  reasons: dict[str, str]
  spans: tuple[tuple[int, int], ...]

  def to_json(self, base_dir: str) -> dict[str, Any]:
    c = self.turn
    path = os.path.relpath(os.path.abspath(c.trajectory), os.path.abspath(base_dir))
    return {"trajectory": path, "step": c.step, "phase": c.phase, "turn": c.turn,
            "commands": list(c.commands), "weight": round(self.weight, 6),
            "score": round(self.score, 6), "episode_id": c.episode_id, "game": c.game,
            "task": c.task, "spans": [list(s) for s in self.spans],
            "scores": {k: round(v, 6) for k, v in self.scores.items()},
            "selectors": list(self.selectors), "reasons": self.reasons}


def percentiles(scored: Sequence[ScoredTurn]) -> dict[TurnKey, float]:
  """Each turn's percentile of score among `scored` in [0, 1] (ties share their mean rank)."""
  if not scored:
    return {}
  if len(scored) == 1:
    return {scored[0].key: 1.0}
  ranks = scipy_stats.rankdata([s.score for s in scored])  # 1..n, ties averaged
  return {s.key: float((r - 1) / (len(scored) - 1)) for s, r in zip(scored, ranks)}


@dataclasses.dataclass(frozen=True)
class CombineConfig:
  weights: Mapping[str, float] = dataclasses.field(default_factory=dict)  # scorer -> weight
  keep_fraction: float = 1.0
  min_score: float | None = None
  balance_games: bool = False
  balance_cap: int = 0  # 0: the smallest game's count
  min_weight: float = 0.5
  max_weight: float = 1.5


def combine(candidates: Sequence[ScoredTurn], passed: Mapping[str, Mapping[TurnKey, str]],
            scored: Mapping[str, Sequence[ScoredTurn]], trajectories: Sequence[Trajectory],
            cfg: CombineConfig) -> list[SelectedTurn]:
  """Ranks and weights `candidates` (already filtered) by the scorers' verdicts."""
  if not 0 < cfg.keep_fraction <= 1:
    raise ValueError(f"keep_fraction must be in (0, 1], got {cfg.keep_fraction}")
  pct = {name: percentiles(v) for name, v in scored.items()}
  raw = {name: {s.key: s for s in v} for name, v in scored.items()}
  unscored = 0.0 if any(pct.values()) else 0.5  # see the module docstring
  rows, silent = [], set()
  for c in candidates:
    num = den = 0.0
    for name in scored:
      if c.key in pct[name]:
        w = float(cfg.weights.get(name, 1.0))
        num += w * pct[name][c.key]
        den += w
    if not den:
      silent.add(c.key)
    rows.append((num / den if den else unscored, c))
  rows.sort(key=lambda r: (-r[0], r[1].key in silent, r[1].key))
  n_keep = max(1, round(cfg.keep_fraction * len(rows))) if rows else 0
  kept = rows[:n_keep]
  if cfg.min_score is not None:
    kept = [r for r in kept if r[0] >= cfg.min_score]
  if cfg.balance_games:
    keep_keys = {c.key for c in filters.balance_games([c for _, c in kept],
                                                       cfg.balance_cap or None)}
    kept = [r for r in kept if r[1].key in keep_keys]
  trajs = by_path(list(trajectories))
  out = []
  for combined, c in kept:
    t = trajs[c.trajectory].turn(c.step, c.phase, c.turn)
    scores = {n: raw[n][c.key].score for n in scored if c.key in raw[n]}
    reasons = {n: keys[c.key] for n, keys in passed.items() if c.key in keys}
    reasons.update({n: raw[n][c.key].reason for n in scored if c.key in raw[n]})
    chose = [n for n, keys in passed.items() if c.key in keys]
    chose += [n for n in scored if pct[n].get(c.key, -1.0) >= 0.5]
    weight = (cfg.min_weight + (cfg.max_weight - cfg.min_weight) * combined) if scored else 1.0
    out.append(SelectedTurn(c, combined, weight, scores, tuple(chose), reasons,
                            tuple(tuple(int(x) for x in t.commands[i]["span"])
                                  for i in c.commands)))
  return out


def selection_stats(selected: Sequence[SelectedTurn], candidates: Sequence[ScoredTurn],
                    passed: Mapping[str, Mapping[TurnKey, str]],
                    scored: Mapping[str, Sequence[ScoredTurn]],
                    trajectories: Sequence[Trajectory],
                    extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Counts by game, op and selector; overlap and rank agreement between selectors."""
  trajs = by_path(list(trajectories))
  by_game = collections.Counter(s.turn.game for s in selected)
  by_phase = collections.Counter(s.turn.phase for s in selected)
  by_op: collections.Counter[str] = collections.Counter()
  for s in selected:
    by_op.update(s.turn.ops(trajs[s.turn.trajectory]))
  by_selector = collections.Counter(n for s in selected for n in s.selectors)
  cand_keys = [c.key for c in candidates]
  chosen: dict[str, set[TurnKey]] = {n: set(keys) & set(cand_keys) for n, keys in passed.items()}
  for n, v in scored.items():
    p = percentiles(v)
    chosen[n] = {k for k, x in p.items() if x >= 0.5}
  overlap = {}
  for a, b in itertools.combinations(sorted(chosen), 2):
    union = chosen[a] | chosen[b]
    overlap[f"{a}|{b}"] = len(chosen[a] & chosen[b]) / len(union) if union else None
  agreement = {}
  for a, b in itertools.combinations(sorted(scored), 2):
    sa = {s.key: s.score for s in scored[a]}
    sb = {s.key: s.score for s in scored[b]}
    common = sorted(set(sa) & set(sb))
    rho = None
    if len(common) >= 3 and len({sa[k] for k in common}) > 1 and len({sb[k] for k in common}) > 1:
      rho = float(scipy_stats.spearmanr([sa[k] for k in common], [sb[k] for k in common])[0])
    agreement[f"{a}|{b}"] = {"n": len(common), "spearman": rho}
  return {
      "episodes": len(trajectories),
      "candidates": len(candidates),
      "selected": len(selected),
      "by_game": dict(sorted(by_game.items())),
      "by_phase": dict(sorted(by_phase.items())),
      "by_op": dict(sorted(by_op.items())),
      "by_selector": dict(sorted(by_selector.items())),
      "scored": {n: len(v) for n, v in scored.items()},
      "passed": {n: len(v) for n, v in passed.items()},
      "overlap_jaccard": overlap,
      "rank_agreement": agreement,
      "weight_mean": (sum(s.weight for s in selected) / len(selected)) if selected else None,
      **dict(extra or {}),
  }


def write_selection(out_dir: str, selected: Sequence[SelectedTurn], stats: Mapping[str, Any],
                    file_name: str = "selected_turns.jsonl") -> str:
  """Writes `selected_turns.jsonl` and `selection_stats.json` atomically; returns the first."""
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, file_name)
  tmp = tmp_path(path)
  with open(tmp, "w", encoding="utf-8") as f:
    for s in selected:
      f.write(json.dumps(s.to_json(out_dir), ensure_ascii=False) + "\n")
  os.replace(tmp, path)
  spath = os.path.join(out_dir, STATS_FILE)
  stmp = tmp_path(spath)
  with open(stmp, "w", encoding="utf-8") as f:
    json.dump(dict(stats), f, indent=2, sort_keys=True)
    f.write("\n")
  os.replace(stmp, spath)
  return path
