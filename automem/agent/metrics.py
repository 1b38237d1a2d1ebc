"""The counters of one episode, filled by the agent and the runner as it plays."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class EpisodeMetrics:
  """Counters of one episode, filled by the agent and the runner as it plays.

  Attributes:
    episode_id: the run-unique id (also the trajectory file's stem).
    game, task, seed: what was played.
    stats: the env's final `EpisodeStats` as a dict (progression, return,
      length, achievements, end reason, error).
    env_steps: env steps taken.
    llm_calls: LLM requests sent (each LOG or PLAN turn is one).
    failed_llm_calls: requests that came back with an error.
    prompt_tokens, completion_tokens, cached_tokens: summed over requests.
    commands: parsed memory commands by op (DONE and ACTION included).
    failed_commands: commands that ran but returned an error, by op.
    invalid_commands: unparseable fragments and commands refused for the phase.
    fallback_actions: env steps where PLAN committed no valid action.
    invalid_actions: committed actions the env did not understand.
    action_repairs: committed names mapped to an action by the structure's aliases.
    action_rejections: committed actions sent back by the structure's action checks.
    wall_s: seconds from the episode's reset to its end.
  """

  episode_id: str
  game: str
  task: str
  seed: int
  stats: dict[str, Any] = dataclasses.field(default_factory=dict)
  env_steps: int = 0
  llm_calls: int = 0
  failed_llm_calls: int = 0
  prompt_tokens: int = 0
  completion_tokens: int = 0
  cached_tokens: int = 0
  commands: dict[str, int] = dataclasses.field(default_factory=dict)
  failed_commands: dict[str, int] = dataclasses.field(default_factory=dict)
  invalid_commands: int = 0
  fallback_actions: int = 0
  invalid_actions: int = 0
  action_repairs: int = 0
  action_rejections: int = 0
  wall_s: float = 0.0

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, data: dict[str, Any]) -> EpisodeMetrics:
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})

  @property
  def progression(self) -> float:
    return float(self.stats.get("progression", 0.0))
