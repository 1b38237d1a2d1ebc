"""Trace digests: what a reviewer needs to know about each episode, and what recurs across them.

`digest_episode(trace, structure)` condenses one episode (steps, progression
and milestone timeline, reward events, invalid and fallback actions,
unchanged observations, the longest stretch without progress, memory ops by
kind, failed commands, redundant writes, empty searches, files never read,
prompt tokens per step). `digest_run(traces, structure)` adds the clusters
of failures that recur across episodes. Both are plain JSON; `render_digest`
turns one into prompt text (single-shot reviewer, offline proposer input).
"""

from __future__ import annotations

import collections
import re
from collections.abc import Mapping, Sequence
from typing import Any

from automem.memory import READ_ONLY_OPS, WRITE_OPS, MemoryStructure
from automem.structure.traces import EpisodeTrace

READ_OPS = ("READ", "SEARCH", "TAIL", "COUNT")
_DIGITS = re.compile(r"\d+")


def _norm(text: str, limit: int = 80) -> str:
  """A message with numbers and quoted values blurred, for grouping recurring failures."""
  first = text.strip().splitlines()[0] if text.strip() else ""
  text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", first)
  return _DIGITS.sub("N", text)[:limit]


def digest_episode(trace: EpisodeTrace, structure: MemoryStructure | None = None) -> dict[str, Any]:
  """The digest of one finished episode (see the module docstring)."""
  timeline, rewards = [], []
  seen: set[str] = set()
  last_progress_step, longest, prev_prog = 0, 0, 0.0
  unchanged, prev_obs = 0, None
  for s in trace.steps:
    for a in s.achievements:
      if a not in seen:
        seen.add(a)
        timeline.append({"step": s.step, "milestone": a})
    if s.reward:
      rewards.append({"step": s.step, "reward": s.reward, "action": s.action})
    if s.progression > prev_prog or s.reward > 0:
      longest = max(longest, s.step - last_progress_step)
      last_progress_step = s.step
    prev_prog = max(prev_prog, s.progression)
    if s.observation is not None and prev_obs is not None and s.observation == prev_obs:
      unchanged += 1
    prev_obs = s.observation if s.observation is not None else prev_obs
  if trace.steps:
    longest = max(longest, trace.steps[-1].step - last_progress_step)
  ops: collections.Counter[str] = collections.Counter()
  failed: collections.Counter[str] = collections.Counter()
  failed_examples: list[dict[str, Any]] = []
  written: set[tuple[str, str]] = set()
  redundant, empty_searches = 0, 0
  read_files: set[str] = set()
  read_all = False
  for t in trace.turns:
    for c in t.commands:
      ops[c.op] += 1
      if not c.ok:
        failed[c.op] += 1
        if len(failed_examples) < 5:
          failed_examples.append({"step": t.step, "phase": t.phase, "op": c.op,
                                  "args": list(c.args)[:2], "error": c.result[:160]})
        continue
      if c.op in WRITE_OPS and c.args:
        key = (c.args[0].lower(), c.args[-1].strip())
        redundant += key in written
        written.add(key)
      if c.op in ("SEARCH", "COUNT") and c.meta.get("matches") == 0:
        empty_searches += 1
      if c.op in READ_OPS and c.args:
        if c.args[0] == "*":
          read_all = True
        read_files.add(c.args[0].lower())
  files = sorted(set(trace.final_memory or {}) | {f.name for f in (structure.files if structure
                                                                     else ())})
  never_read = [] if read_all else [f for f in files if f.lower() not in read_files]
  n_steps = max(len(trace.steps), 1)
  return {
      "episode_id": trace.episode_id, "task": trace.task, "seed": trace.seed,
      "steps": len(trace.steps), "progression": trace.progression,
      "end_reason": trace.stats.get("end_reason", ""),
      "milestones": timeline, "reward_events": rewards[:30],
      "invalid_actions": sum(not s.valid_action for s in trace.steps),
      "fallback_actions": sum(s.fallback for s in trace.steps),
      "unchanged_observations": unchanged,
      "longest_without_progress": longest,
      "memory_ops": dict(sorted(ops.items())),
      "failed_commands": dict(sorted(failed.items())), "failed_examples": failed_examples,
      "redundant_writes": redundant, "empty_searches": empty_searches,
      "files_never_read": never_read,
      "file_sizes": {k: len(v) for k, v in sorted((trace.final_memory or {}).items())},
      "prompt_tokens_per_step": sum(t.prompt_tokens for t in trace.turns) / n_steps,
      "llm_turns_per_step": len(trace.turns) / n_steps,
      "read_ops": sum(v for k, v in ops.items() if k in READ_ONLY_OPS),
      "write_ops": sum(v for k, v in ops.items() if k in WRITE_OPS),
  }


def _clusters(traces: Sequence[EpisodeTrace]) -> list[dict[str, Any]]:
  """Failures that recur across episodes: (kind, normalised message) with counts."""
  groups: dict[tuple[str, str], dict[str, Any]] = {}

  def add(kind: str, msg: str, trace: EpisodeTrace, step: int) -> None:
    g = groups.setdefault((kind, _norm(msg)), {"kind": kind, "pattern": _norm(msg),
                                               "count": 0, "episodes": set(),
                                               "example": {"episode": trace.episode_id,
                                                           "step": step, "text": msg[:200]}})
    g["count"] += 1
    g["episodes"].add(trace.episode_id)

  for tr in traces:
    for t in tr.turns:
      for c in t.commands:
        if not c.ok:
          add(f"failed {c.op}", c.result, tr, t.step)
      if t.error:
        add("llm error", t.error, tr, t.step)
    for s in tr.steps:
      if not s.valid_action:
        add("invalid action", s.feedback or str(s.action), tr, s.step)
      elif s.fallback:
        add("fallback action", "no action committed; fallback played", tr, s.step)
  out = sorted(groups.values(), key=lambda g: (-len(g["episodes"]), -g["count"], g["pattern"]))
  return [{**g, "episodes": len(g["episodes"])} for g in out]


def digest_run(traces: Sequence[EpisodeTrace], structure: MemoryStructure | None = None,
               *, max_clusters: int = 12) -> dict[str, Any]:
  """Per-episode digests, their totals and the recurring failure clusters."""
  eps = [digest_episode(t, structure) for t in traces]
  n = max(len(eps), 1)
  total_steps = max(sum(e["steps"] for e in eps), 1)
  ops: collections.Counter[str] = collections.Counter()
  never_read: collections.Counter[str] = collections.Counter()
  for e in eps:
    ops.update(e["memory_ops"])
    never_read.update(e["files_never_read"])
  return {
      "episodes": eps,
      "totals": {
          "episodes": len(eps),
          "progression_mean": sum(e["progression"] for e in eps) / n,
          "steps_mean": sum(e["steps"] for e in eps) / n,
          "fallback_rate": sum(e["fallback_actions"] for e in eps) / total_steps,
          "invalid_rate": sum(e["invalid_actions"] for e in eps) / total_steps,
          "unchanged_rate": sum(e["unchanged_observations"] for e in eps) / total_steps,
          "memory_ops_per_step": {k: v / total_steps for k, v in sorted(ops.items())},
          "empty_searches": sum(e["empty_searches"] for e in eps),
          "redundant_writes": sum(e["redundant_writes"] for e in eps),
          "files_never_read": {k: v / n for k, v in sorted(never_read.items())},
          "prompt_tokens_per_step": sum(e["prompt_tokens_per_step"] * e["steps"]
                                        for e in eps) / total_steps,
          "longest_without_progress_mean": sum(e["longest_without_progress"] for e in eps) / n,
      },
      "clusters": _clusters(traces)[:max_clusters],
  }


def render_digest(digest: Mapping[str, Any], *, max_episodes: int = 20) -> str:
  """The run digest as compact prompt text."""
  t = digest["totals"]
  lines = [f"{t['episodes']} episodes; progression mean {t['progression_mean']:.2f}; "
           f"steps mean {t['steps_mean']:.1f}; fallback rate {t['fallback_rate']:.2f}; "
           f"invalid-action rate {t['invalid_rate']:.2f}; unchanged-observation rate "
           f"{t['unchanged_rate']:.2f}; prompt tokens/step {t['prompt_tokens_per_step']:.0f}",
           "memory ops per step: " + (", ".join(f"{k} {v:.2f}" for k, v in
                                                t["memory_ops_per_step"].items()) or "none"),
           f"empty searches {t['empty_searches']}; redundant writes {t['redundant_writes']}; "
           "files never read (share of episodes): " + (", ".join(
               f"{k} {v:.0%}" for k, v in t["files_never_read"].items()) or "none")]
  w = max([len(e["episode_id"]) for e in digest["episodes"]] + [7])
  lines.append(f"\n{'episode':<{w}} {'task':<29}  prog  steps  fallb  inval  unchg  no-prog  "
               "ops  failed")
  for e in digest["episodes"][:max_episodes]:
    lines.append(f"{e['episode_id']:<{w}} {e['task'][:29]:<29} {e['progression']:>5.1f} "
                 f"{e['steps']:>6} {e['fallback_actions']:>6} {e['invalid_actions']:>6} "
                 f"{e['unchanged_observations']:>6} {e['longest_without_progress']:>8} "
                 f"{sum(e['memory_ops'].values()):>4} {sum(e['failed_commands'].values()):>7}")
  if digest["clusters"]:
    lines.append("\nrecurring failures (kind: pattern, episodes, count):")
    for c in digest["clusters"]:
      lines.append(f"- {c['kind']}: {c['pattern']!r} in {c['episodes']} episodes, "
                   f"{c['count']} times (e.g. {c['example']['episode']} step "
                   f"{c['example']['step']})")
  return "\n".join(lines)
