"""Tiny run directories for the report's tests, written with the runner's own trajectory records
(header, LOG/PLAN turns, steps, end line with the episode's metrics): no model, no env, so the
tests stay fast; the pipeline tests cover the report on really played episodes."""

from __future__ import annotations

import os
from collections.abc import Mapping

import pytest

from automem.agent.metrics import EpisodeMetrics
from automem.agent.trajectory import End, Header, Step, Turn, write_trajectory

# v0 and v1 on the same two (task, seed) pairs; v1 gains 20 points on the first, 0 on the other.
PROGRESSIONS = {"v0": {("default", 2_000_000): 10.0, ("default", 2_000_001): 20.0},
                "v1": {("default", 2_000_000): 30.0, ("default", 2_000_001): 20.0}}


def write_run(run_dir: str, progressions: Mapping[tuple[str, int], float],
              game: str = "crafter", seed_set: str = "test", steps: int = 3) -> str:
  """A run directory whose episodes (one per (task, seed)) end at the given progressions."""
  for task, seed in sorted(progressions):
    eid = f"{game}-{task}-{seed}"
    prog = progressions[(task, seed)]
    records: list = []
    for i in range(steps):
      records.append(Turn(episode_id=eid, step=i, phase="plan", turn=0, prompt_tokens=50,
                          completion="<|ACTION|>Do<|END|>", action="Do",
                          commands=[{"op": "ACTION", "args": ["Do"], "ok": True}]))
      records.append(Step(episode_id=eid, step=i, action="Do", progression=prog * (i + 1) / steps))
    stats = {"progression": prog, "end_reason": "done", "achievements": [], "length": steps}
    metrics = EpisodeMetrics(eid, game, task, seed, stats=stats, env_steps=steps,
                             llm_calls=steps, prompt_tokens=50 * steps, commands={"ACTION": steps})
    records.append(End(episode_id=eid, stats=stats, metrics=metrics.to_dict()))
    header = Header(episode_id=eid, game=game, task=task, seed=seed, seed_set=seed_set,
                    structure_version="v0", action_names=["Do"], initial_memory={})
    write_trajectory(os.path.join(run_dir, "trajectories", f"{eid}.jsonl"), header, records)
  return run_dir


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> str:
  """A directory of two run directories, `v0` and `v1` (see `PROGRESSIONS`), on Crafter."""
  root = str(tmp_path_factory.mktemp("runs"))
  for label, progs in PROGRESSIONS.items():
    write_run(os.path.join(root, label), progs)
  return root
