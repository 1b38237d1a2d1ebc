"""Deterministic filters (the paper's post-processing) and outcome filters.

The paper post-processes the turns its judge picked: code fences around
commands are unwrapped, a LOG target is cut at `<|DONE|>`, the ACTION is
stripped from a PLAN target (the base model commits actions), prose after the
last command is trimmed, and an item left without a memory command is
dropped. Our trainer puts loss only on the character spans of chosen
commands, so the same rules become a choice of command indices: commands
after DONE (LOG) or from ACTION on (PLAN) are not trained, nor ACTION,
failed commands or parse errors; fences and prose are never trained (they
lie outside every span); a turn left with no memory command is dropped.

Outcome filters keep turns by what the episode achieved: the top fraction of
episodes by progression (per game), turns within K steps before an
achievement or milestone unlocked, and an equal share per game.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re
from collections.abc import Sequence

from automem.agent.trajectory import Trajectory
from automem.credit.scored import ScoredTurn, scored_turn

_FENCE = re.compile(r"```")


@dataclasses.dataclass(frozen=True)
class DeterministicConfig:
  """The post-processing rules (defaults: the paper's)."""

  phases: tuple[str, ...] = ("log", "plan")  # which phases' turns are candidates
  done_is_memory_op: bool = True  # a LOG turn whose only command is DONE is kept (paper: yes)
  drop_failed: bool = True  # failed commands are not trained
  drop_errored_turns: bool = True  # turns whose LLM call failed are dropped


def turn_commands(commands: Sequence[dict], phase: str, cfg: DeterministicConfig
                  ) -> tuple[tuple[int, ...], str]:
  """Indices of the commands to train on, and what was removed (for the reason)."""
  keep, removed = [], collections.Counter()
  for i, c in enumerate(commands):
    op = str(c.get("op") or "").upper()
    if op == "ACTION":
      removed["action"] += 1
      if phase == "plan":
        removed["after_action"] += len(commands) - i - 1
        break
      continue
    if not op:
      removed["parse_error"] += 1
      continue
    if cfg.drop_failed and not c.get("ok", True):
      removed["failed"] += 1
      continue
    keep.append(i)
    if op == "DONE":
      removed["after_done"] += len(commands) - i - 1
      break
  ops = [str(commands[i].get("op")).upper() for i in keep]
  memory = [o for o in ops if o != "DONE" or cfg.done_is_memory_op]
  if not memory:
    return (), "no memory command"
  why = ", ".join(f"{k} {v}" for k, v in sorted(removed.items()) if v)
  return tuple(keep), f"kept {len(keep)} command(s)" + (f"; removed {why}" if why else "")


def deterministic_candidates(trajectories: Sequence[Trajectory],
                             cfg: DeterministicConfig | None = None
                             ) -> tuple[list[ScoredTurn], dict[str, int]]:
  """Every turn with a memory command to train, after the post-processing rules.

  Returns:
    The candidates (selector "deterministic", score 1) and counts of why
    turns were dropped or changed.
  """
  cfg = cfg or DeterministicConfig()
  out: list[ScoredTurn] = []
  stats: collections.Counter[str] = collections.Counter()
  for traj in trajectories:
    for t in traj.turns:
      stats["turns"] += 1
      if t.phase not in cfg.phases or t.subphase == "commit":
        stats["dropped_phase"] += 1
        continue
      if cfg.drop_errored_turns and t.error:
        stats["dropped_llm_error"] += 1
        continue
      keep, reason = turn_commands(t.commands, t.phase, cfg)
      if not keep:
        stats["dropped_no_memory_command"] += 1
        continue
      if _FENCE.search(t.completion):
        stats["fenced"] += 1  # fences lie outside command spans: never trained
      if len(keep) < len(t.commands):
        stats["trimmed"] += 1
      out.append(scored_turn(traj, t, keep, reason=reason, selector="deterministic"))
  stats["candidates"] = len(out)
  return out, dict(stats)


def top_episodes(candidates: Sequence[ScoredTurn], trajectories: Sequence[Trajectory],
                 fraction: float) -> list[ScoredTurn]:
  """Turns of the top `fraction` of episodes by final progression, per game (ties: return)."""
  if not 0 < fraction <= 1:
    raise ValueError(f"top episode fraction must be in (0, 1], got {fraction}")
  by_game: dict[str, list[Trajectory]] = collections.defaultdict(list)
  for t in trajectories:
    by_game[t.header.game].append(t)
  kept: set[str] = set()
  for trajs in by_game.values():
    ranked = sorted(trajs, key=lambda t: (-t.progression, -_return(t), t.path))
    kept |= {t.path for t in ranked[: max(1, math.ceil(fraction * len(ranked)))]}
  return [c.rescored("top_episodes", 1.0, "top episode by progression")
          for c in candidates if c.trajectory in kept]


def near_unlock(candidates: Sequence[ScoredTurn], trajectories: Sequence[Trajectory],
                window: int) -> list[ScoredTurn]:
  """Turns at most `window` steps before (or at) an achievement/milestone unlocking."""
  unlocks = {t.path: t.unlock_steps() for t in trajectories}
  out = []
  for c in candidates:
    hits = [(s - c.step, a) for a, s in unlocks.get(c.trajectory, {}).items()
            if 0 <= s - c.step <= window]
    if hits:
      gap, name = min(hits)
      out.append(c.rescored("near_unlock", 1.0 - gap / (window + 1),
                            f"{gap} step(s) before {name}"))
  return out


def balance_games(ranked: Sequence[ScoredTurn], cap: int | None = None) -> list[ScoredTurn]:
  """At most `cap` turns per game (default: the smallest game's count), best first.

  `ranked` must be sorted best first; the order is kept.
  """
  counts = collections.Counter(c.game for c in ranked)
  if not counts:
    return []
  cap = min(counts.values()) if cap is None else cap
  seen: collections.Counter[str] = collections.Counter()
  out = []
  for c in ranked:
    if seen[c.game] < cap:
      seen[c.game] += 1
      out.append(c)
  return out


def _return(t: Trajectory) -> float:
  if t.end is not None:
    return float(t.end.stats.get("episode_return", 0.0))
  return sum(s.reward for s in t.steps)
