"""How well an agent handles memory: the share of LOG turns whose commands are all well formed
and successful, read from trajectories.

A LOG turn counts as clean when it issued at least one command and every one
of them parsed, was allowed and ran without error (`ok`). LOG turns are
memory turns in both the single-model and the two-model agent, so the figure
compares a base agent with a specialist on the same footing.
"""

from __future__ import annotations

from collections.abc import Iterable

from automem.agent.trajectory import read_trajectories


def clean_log_turns(paths: str | Iterable[str]) -> dict[str, float]:
  """`{"turns", "clean", "fraction"}` over every finished episode under `paths`."""
  turns = clean = 0
  for traj in read_trajectories(paths, finished_only=True):
    for t in traj.turns:
      if t.phase != "log" or t.error:
        continue
      turns += 1
      clean += bool(t.commands) and all(c.get("ok") for c in t.commands)
  return {"turns": turns, "clean": clean, "fraction": clean / turns if turns else float("nan")}
