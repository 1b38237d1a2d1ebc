"""Loop 1's only access to trajectory files: compact, read-only episode traces.

Everything else in `automem.structure` reads episodes through this module
(on top of the one trajectory reader, `automem.agent.read_trajectory`), so a
schema change touches only `load_trace`.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Mapping, Sequence
from typing import Any

from automem.agent.trajectory import iter_records, read_trajectory
from automem.memory import MemoryStructure, apply_diff


@dataclasses.dataclass(frozen=True)
class CommandRec:
  op: str
  args: tuple[str, ...]
  ok: bool
  result: str
  meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class TurnRec:
  """One LLM turn: phase, the last user message, the completion and its commands."""

  step: int
  phase: str
  turn: int
  user: str
  completion: str
  commands: tuple[CommandRec, ...]
  prompt_tokens: int
  completion_tokens: int
  memory_diff: Mapping[str, Any]
  error: str | None


@dataclasses.dataclass(frozen=True)
class StepRec:
  """One env step: the action, whether it was the fallback, reward, feedback, progression."""

  step: int
  action: str | None
  fallback: bool
  reward: float
  valid_action: bool
  feedback: str
  progression: float
  achievements: tuple[str, ...]
  observation: str | None  # the observation the step's PLAN saw (None: not recoverable)


@dataclasses.dataclass(frozen=True)
class EpisodeTrace:
  episode_id: str
  game: str
  task: str
  seed: int
  finished: bool
  steps: tuple[StepRec, ...]
  turns: tuple[TurnRec, ...]
  stats: Mapping[str, Any]
  final_memory: Mapping[str, str] | None
  path: str
  initial_memory: Mapping[str, str] | None = None  # the files at the start (recorded headers)
  # Every memory change in order, (step, diff): the turns' and the harness's
  # (`Trajectory.memory_changes`).
  memory_changes: tuple[tuple[int, Mapping[str, Any]], ...] = ()

  @property
  def progression(self) -> float:
    return float(self.stats.get("progression", 0.0))


def _between(template: str, rendered: str, name: str) -> str | None:
  """The text a template's `{name}` placeholder became in `rendered` (None: not found)."""
  key = "{" + name + "}"
  if key not in template:
    return None
  before, after = template.split(key, 1)
  before = before.rsplit("}", 1)[-1]
  after = after.split("{", 1)[0]
  start = rendered.rfind(before) + len(before) if before else 0
  if before and start < len(before):
    return None
  end = rendered.find(after, start) if after else len(rendered)
  return rendered[start:end if end >= 0 else len(rendered)]


def load_trace(path: str, structure: MemoryStructure | None = None) -> EpisodeTrace:
  """One episode's trace; `structure` (what it played with) recovers the observations of
  files older than the versioned schema (which records them per step)."""
  raw = read_trajectory(path)
  turns = []
  first_plan_user: dict[int, str] = {}
  for t in raw.turns:
    user = next((m["content"] for m in reversed(t.messages) if m["role"] == "user"), "")
    if t.phase == "plan" and t.step not in first_plan_user:
      first_plan_user[t.step] = user
    turns.append(TurnRec(
        step=t.step, phase=t.phase, turn=t.turn, user=user, completion=t.completion,
        commands=tuple(CommandRec(c["op"], tuple(c.get("args", ())), bool(c.get("ok")),
                                  c.get("result", ""), c.get("meta") or {})
                       for c in t.commands),
        prompt_tokens=t.prompt_tokens, completion_tokens=t.completion_tokens,
        memory_diff=t.memory_diff, error=t.error))
  steps = []
  after = {s.step: s.observation for s in raw.steps}
  for s in raw.steps:
    # What the step's PLAN saw: the previous step's observation after its action, or in
    # older files the observation in the PLAN prompt.
    obs = None
    if s.observation is None and structure is not None and s.step in first_plan_user:
      obs = _between(structure.plan.user, first_plan_user[s.step], "observation")
    elif s.observation is not None:
      obs = after.get(s.step - 1, raw.header.initial_observation)
    steps.append(StepRec(
        step=s.step, action=s.action, fallback=s.fallback, reward=s.reward,
        valid_action=s.valid_action, feedback=s.feedback or "", progression=s.progression,
        achievements=tuple(s.achievements), observation=obs))
  end = raw.end
  return EpisodeTrace(
      episode_id=raw.header.episode_id, game=raw.header.game, task=raw.header.task,
      seed=raw.header.seed, finished=end is not None, steps=tuple(steps), turns=tuple(turns),
      stats=end.stats if end is not None else {},
      final_memory=end.final_memory if end is not None else None, path=path,
      initial_memory=raw.header.initial_memory,
      memory_changes=tuple((step, diff) for step, _, diff in raw.memory_changes() if diff))


def load_run(run_dir: str, structures: Mapping[str, MemoryStructure] | None = None,
             episodes: Sequence[str] | None = None) -> list[EpisodeTrace]:
  """The finished episodes of an evaluation run dir (all, or the named ones), sorted by id."""
  paths = sorted(glob.glob(os.path.join(run_dir, "trajectories", "*.jsonl")))
  if episodes is not None:
    wanted = set(episodes)
    paths = [p for p in paths if os.path.basename(p)[: -len(".jsonl")] in wanted]
  out = []
  for p in paths:
    header = next(iter_records(p), {})  # the game, to find its structure
    s = (structures or {}).get(header.get("game", ""))
    if s is None:
      spath = os.path.join(run_dir, "structures", f"{header.get('game', '')}.json")
      s = MemoryStructure.load(spath) if os.path.exists(spath) else None
    trace = load_trace(p, s)
    if trace.finished:
      out.append(trace)
  return out


def memory_at(trace: EpisodeTrace, step: int,
              initial: Mapping[str, str] | None = None) -> dict[str, str]:
  """The memory files at the end of env step `step`: every turn's change up to it and the
  harness's (retention, harness files), from the recorded initial files, else `initial`."""
  files = dict(trace.initial_memory if trace.initial_memory is not None else initial or {})
  for s, diff in trace.memory_changes:
    if s > step:
      break
    files = apply_diff(files, diff)
  return files
