"""Loop 1's only access to trajectory files: typed, read-only episode traces.

Everything else in `automem.structure` reads episodes through this module,
so when the trajectory reader changes (one typed schema for both loops)
only `load_trace` has to follow.
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
  """One episode's trace; `structure` (what it played with) recovers its observations."""
  raw = read_trajectory(path)
  header, end = raw["header"] or {}, raw["end"]
  turns = []
  first_plan_user: dict[int, str] = {}
  for t in raw["turns"]:
    user = next((m["content"] for m in reversed(t.get("messages", ())) if m["role"] == "user"), "")
    if t.get("phase") == "plan" and t["step"] not in first_plan_user:
      first_plan_user[t["step"]] = user
    turns.append(TurnRec(
        step=int(t["step"]), phase=str(t.get("phase", "")), turn=int(t.get("turn", 0)), user=user,
        completion=t.get("completion", ""),
        commands=tuple(CommandRec(c["op"], tuple(c.get("args", ())), bool(c.get("ok")),
                                  c.get("result", ""), c.get("meta") or {})
                       for c in t.get("commands", ())),
        prompt_tokens=int(t.get("prompt_tokens", 0)),
        completion_tokens=int(t.get("completion_tokens", 0)),
        memory_diff=t.get("memory_diff") or {}, error=t.get("error")))
  steps = []
  for s in raw["steps"]:
    obs = s.get("observation")
    if obs is None and structure is not None and s["step"] in first_plan_user:
      obs = _between(structure.plan.user, first_plan_user[s["step"]], "observation")
    steps.append(StepRec(
        step=int(s["step"]), action=s.get("action"), fallback=bool(s.get("fallback")),
        reward=float(s.get("reward", 0.0)), valid_action=bool(s.get("valid_action", True)),
        feedback=s.get("feedback", "") or "", progression=float(s.get("progression", 0.0)),
        achievements=tuple(s.get("achievements", ())), observation=obs))
  return EpisodeTrace(
      episode_id=str(header.get("episode_id", os.path.basename(path))),
      game=str(header.get("game", "")), task=str(header.get("task", "")),
      seed=int(header.get("seed", -1)), finished=end is not None, steps=tuple(steps),
      turns=tuple(turns), stats=(end or {}).get("stats", {}),
      final_memory=(end or {}).get("final_memory"), path=path)


def load_run(run_dir: str, structures: Mapping[str, MemoryStructure] | None = None,
             episodes: Sequence[str] | None = None) -> list[EpisodeTrace]:
  """The finished episodes of an evaluation run dir (all, or the named ones), sorted by id."""
  paths = sorted(glob.glob(os.path.join(run_dir, "trajectories", "*.jsonl")))
  if episodes is not None:
    wanted = set(episodes)
    paths = [p for p in paths if os.path.basename(p)[: -len(".jsonl")] in wanted]
  out = []
  for p in paths:
    header = next(iter_records(p), {})
    s = (structures or {}).get(header.get("game", ""))
    if s is None:
      spath = os.path.join(run_dir, "structures", f"{header.get('game', '')}.json")
      s = MemoryStructure.load(spath) if os.path.exists(spath) else None
    trace = load_trace(p, s)
    if trace.finished:
      out.append(trace)
  return out


def memory_at(trace: EpisodeTrace, step: int, initial: Mapping[str, str]) -> dict[str, str]:
  """The memory files after every turn up to and including env step `step`."""
  files = dict(initial)
  for t in trace.turns:
    if t.step > step:
      break
    if t.memory_diff:
      files = apply_diff(files, t.memory_diff)
  return files
