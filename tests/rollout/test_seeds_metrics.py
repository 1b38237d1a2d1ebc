"""Named seed sets and the run summary statistics."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from automem.rollout import (
    SEED_SETS,
    EpisodeMetrics,
    format_summary,
    mean_ci95,
    seed_set_of,
    seeds,
    summarize,
)


def test_seed_sets_are_disjoint_and_named():
  sets = {name: set(seeds(name, 1000)) for name in SEED_SETS}
  names = list(sets)
  for i, a in enumerate(names):
    for b in names[i + 1:]:
      assert not sets[a] & sets[b]
  assert all(seed_set_of(s) == "test" for s in seeds("test", 5, offset=999_990))
  assert seeds("selection", 3, offset=2) == [1_000_002, 1_000_003, 1_000_004]
  with pytest.raises(ValueError, match="unknown seed set"):
    seeds("validation", 3)
  with pytest.raises(ValueError, match="holds 1000000 seeds"):
    seeds("train", 2, offset=999_999)


def test_mean_ci95_matches_student_t():
  values = [10.0, 20.0, 40.0, 0.0, 30.0]
  mean, half = mean_ci95(values)
  lo, hi = stats.t.interval(0.95, len(values) - 1, loc=20.0, scale=stats.sem(values))
  assert mean == 20.0 and math.isclose(half, (hi - lo) / 2, rel_tol=1e-9)
  assert mean_ci95([5.0]) == (5.0, 0.0)
  assert all(math.isnan(x) for x in mean_ci95([]))


def record(game, task, prog, **kw):
  return EpisodeMetrics(f"{game}-{task}-{prog}", game, task, 0,
                        stats={"progression": prog, "achievements": ["a"] if prog else [],
                               "end_reason": "death", "length": 10, "episode_return": 1.0},
                        env_steps=10, llm_calls=30, prompt_tokens=3000, cached_tokens=2400,
                        commands={"APPEND": 2, "ACTION": 10}, fallback_actions=1, **kw)


def test_summary_per_game_and_task():
  recs = [record("minihack", "A", 100.0), record("minihack", "A", 0.0),
          record("minihack", "B", 0.0), record("crafter", "crafter", 9.0)]
  s = summarize(recs)
  mh = s["games"]["minihack"]
  # A game's mean is the mean of its tasks' means (every task weighs the same).
  assert mh["progression_mean"] == pytest.approx(25.0)
  assert mh["tasks"]["A"]["progression_mean"] == 50.0
  assert mh["tasks"]["A"]["achievement_rates"] == {"a": 0.5}
  assert mh["llm_calls_per_step"] == 3.0 and mh["cached_tokens_per_step"] == 240.0
  assert mh["commands"] == {"ACTION": 30, "APPEND": 6}
  assert mh["fallback_rate"] == pytest.approx(0.1)
  assert s["overall"]["episodes"] == 4 and s["games"]["crafter"]["progression_ci95"] == 0.0


def test_errored_episodes_are_counted_not_scored():
  played = [record("minihack", "A", 100.0), record("minihack", "A", 50.0)]
  crashed = record("minihack", "A", 0.0)
  crashed.stats.update(end_reason="error", error="env step failed")
  lost = record("minihack", "B", 0.0)
  lost.stats.update(end_reason="error", error="LLM request failed")
  s = summarize([*played, crashed, lost])
  a = s["games"]["minihack"]["tasks"]["A"]
  assert a["progression_mean"] == 75.0 and a["progression_min"] == 50.0
  assert a["progression_ci95"] == mean_ci95([100.0, 50.0])[1]
  assert a["errors"] == 1 and a["episodes"] == 3
  assert a["end_reasons"] == {"death": 2, "error": 1}
  assert a["llm_calls"] == 90  # usage still counts every episode
  b = s["games"]["minihack"]["tasks"]["B"]
  assert b["errors"] == 1 and math.isnan(b["progression_mean"])
  assert s["overall"]["errors"] == 2 and s["overall"]["progression_mean"] == 75.0
  row = next(line for line in format_summary(s).splitlines() if line.startswith("  A "))
  assert row.split()[1:4] == ["3", "1", "75.00"]
