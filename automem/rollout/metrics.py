"""Per-episode metrics records and the run summary.

An `EpisodeMetrics` record is written for every finished episode
(`metrics/episodes.jsonl`); `summarize` folds them into the run summary
(`summary.json`): mean progression with a 95% confidence interval per game
and task (errored episodes counted apart), achievement rates, LLM usage per env step, memory-command counts by
op, invalid commands and fallback actions.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable, Sequence
from typing import Any

from scipy import stats as scipy_stats

from automem.agent.metrics import EpisodeMetrics


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
  """Mean and the half-width of its 95% confidence interval (Student's t).

  One value gives a half-width of 0 (nothing to estimate a spread from),
  no value gives (nan, nan).
  """
  n = len(values)
  if n == 0:
    return math.nan, math.nan
  mean = sum(values) / n
  if n == 1:
    return mean, 0.0
  var = sum((v - mean) ** 2 for v in values) / (n - 1)
  half = float(scipy_stats.t.ppf(0.975, n - 1)) * math.sqrt(var / n)
  return mean, half


def is_error(record: EpisodeMetrics) -> bool:
  """Whether the episode ended with an error (failed LLM turn, crashed env), not by play."""
  return record.stats.get("end_reason") == "error"


def _group_summary(records: Sequence[EpisodeMetrics]) -> dict[str, Any]:
  # An errored episode says nothing about the agent's play: it is counted, not scored.
  prog = [r.progression for r in records if not is_error(r)]
  mean, half = mean_ci95(prog)
  steps = sum(r.env_steps for r in records)
  per_step = max(steps, 1)
  achievements: collections.Counter[str] = collections.Counter()
  for r in records:
    achievements.update(set(r.stats.get("achievements", ())))
  commands: collections.Counter[str] = collections.Counter()
  failed: collections.Counter[str] = collections.Counter()
  ends: collections.Counter[str] = collections.Counter()
  for r in records:
    commands.update(r.commands)
    failed.update(r.failed_commands)
    ends[r.stats.get("end_reason", "unknown")] += 1
  return {
      "episodes": len(records),
      "errors": sum(is_error(r) for r in records),
      "progression_mean": mean,
      "progression_ci95": half,
      "progression_min": min(prog) if prog else math.nan,
      "progression_max": max(prog) if prog else math.nan,
      "return_mean": mean_ci95([float(r.stats.get("episode_return", 0.0)) for r in records])[0],
      "length_mean": mean_ci95([float(r.stats.get("length", 0)) for r in records])[0],
      "achievement_rates": {k: v / len(records) for k, v in sorted(achievements.items())},
      "end_reasons": dict(sorted(ends.items())),
      "env_steps": steps,
      "llm_calls": sum(r.llm_calls for r in records),
      "failed_llm_calls": sum(r.failed_llm_calls for r in records),
      "llm_calls_per_step": sum(r.llm_calls for r in records) / per_step,
      "prompt_tokens_per_step": sum(r.prompt_tokens for r in records) / per_step,
      "completion_tokens_per_step": sum(r.completion_tokens for r in records) / per_step,
      "cached_tokens_per_step": sum(r.cached_tokens for r in records) / per_step,
      "cached_fraction": (
          sum(r.cached_tokens for r in records) / max(sum(r.prompt_tokens for r in records), 1)
      ),
      "commands": dict(sorted(commands.items())),
      "failed_commands": dict(sorted(failed.items())),
      "invalid_commands": sum(r.invalid_commands for r in records),
      "fallback_actions": sum(r.fallback_actions for r in records),
      "fallback_rate": sum(r.fallback_actions for r in records) / per_step,
      "invalid_actions": sum(r.invalid_actions for r in records),
  }


def summarize(records: Iterable[EpisodeMetrics]) -> dict[str, Any]:
  """The run summary: overall, per game (mean over its tasks) and per game/task.

  A game's progression is the mean over its tasks' means (BALROG's
  convention: every MiniHack task weighs the same whatever its episode
  count); its interval comes from the episodes pooled.

  Episodes that ended with an error (end_reason "error": a failed LLM turn,
  a crashed env) are left out of the progression mean, interval, min and
  max, and counted in `errors` instead; a group with only such episodes has
  a NaN progression. Every other figure (usage, commands, end reasons, ...)
  counts all episodes.
  """
  records = list(records)
  by_task: dict[tuple[str, str], list[EpisodeMetrics]] = collections.defaultdict(list)
  for r in records:
    by_task[(r.game, r.task)].append(r)
  games: dict[str, Any] = {}
  for game in sorted({g for g, _ in by_task}):
    tasks = {t: _group_summary(rs) for (g, t), rs in sorted(by_task.items()) if g == game}
    pooled = _group_summary([r for r in records if r.game == game])
    pooled["progression_mean"] = sum(s["progression_mean"] for s in tasks.values()) / len(tasks)
    pooled["tasks"] = tasks
    games[game] = pooled
  return {"overall": _group_summary(records) if records else {"episodes": 0}, "games": games}


def format_summary(summary: dict[str, Any]) -> str:
  """A small plain-text table of progression (and errored episodes) per game and task."""
  lines = [f"{'game/task':<44} {'n':>4} {'errors':>6} {'progression':>18} {'calls/step':>10} "
           f"{'fallback':>8}"]
  for game, g in summary.get("games", {}).items():
    rows = [(game, g)] + [(f"  {t}", s) for t, s in g["tasks"].items()]
    for name, s in rows:
      prog = f"{s['progression_mean']:.2f} ± {s['progression_ci95']:.2f}"
      lines.append(
          f"{name:<44} {s['episodes']:>4} {s['errors']:>6} {prog:>18} {s['llm_calls_per_step']:>10.2f} "
          f"{s['fallback_rate']:>8.2f}"
      )
  if "episodes_planned" in summary:
    lines.append(
        f"episodes: {summary['episodes_planned']} planned, {summary['episodes_finished']} "
        f"finished, {summary['episodes_errored']} errored, {summary['episodes_unfinished']} "
        f"unfinished; {summary['episodes_retried']} retried after an error "
        f"({summary['episodes_retried_finished']} of them now finished)")
  if summary.get("stopped"):
    lines.append(f"stopped early: {summary['stopped']}")
  return "\n".join(lines)
