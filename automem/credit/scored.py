"""Scored turns: what every selector returns, and the candidates they start from.

A candidate is one LLM turn of one trajectory with the command indices that
would be trained (the paper's deterministic post-processing decides them, see
`automem.credit.filters.deterministic_candidates`). Selectors keep, drop or
score candidates; `automem.credit.combine` folds their verdicts into one
weight per turn.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from automem.agent.trajectory import Trajectory, Turn

TurnKey = tuple[str, int, str, int]  # (trajectory path, step, phase, turn)


@dataclasses.dataclass(frozen=True)
class ScoredTurn:
  """One selector's verdict on one turn.

  Attributes:
    trajectory: path of the episode's file.
    episode_id, game, task: from its header.
    step, phase, turn: which turn.
    commands: indices into the turn's `commands` to train on.
    score: the selector's score (higher is better; filters give 1.0).
    reason: why, in a few words (kept in the selection output).
    selector: the selector's name.
  """

  trajectory: str
  episode_id: str
  game: str
  task: str
  step: int
  phase: str
  turn: int
  commands: tuple[int, ...]
  score: float = 1.0
  reason: str = ""
  selector: str = ""

  @property
  def key(self) -> TurnKey:
    return (self.trajectory, self.step, self.phase, self.turn)

  def ops(self, traj: Trajectory) -> list[str]:
    t = traj.turn(self.step, self.phase, self.turn)
    return [str(t.commands[i].get("op", "")) for i in self.commands]

  def rescored(self, selector: str, score: float, reason: str) -> ScoredTurn:
    return dataclasses.replace(self, selector=selector, score=float(score), reason=reason)

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def scored_turn(traj: Trajectory, turn: Turn, commands: tuple[int, ...], *, score: float = 1.0,
                reason: str = "", selector: str = "") -> ScoredTurn:
  h = traj.header
  return ScoredTurn(trajectory=traj.path, episode_id=h.episode_id, game=h.game, task=h.task,
                    step=turn.step, phase=turn.phase, turn=turn.turn, commands=commands,
                    score=score, reason=reason, selector=selector)


def by_path(trajectories: list[Trajectory]) -> dict[str, Trajectory]:
  return {t.path: t for t in trajectories}
