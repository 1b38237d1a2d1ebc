"""The LOG/PLAN memory agent: state machine, prompt assembly, observers, trajectories.

Public API::

  EpisodeAgent(episode_id=, game=, task=, seed=, structure=, store=, action_names=, config=)
    .start(observation)                 begin on the env's first observation
    .pending_request() -> AgentRequest  (role "specialist" | "base", LLMRequest) or None
    .on_llm_result(result)              consume it; advance LOG -> PLAN (-> COMMIT) -> ACT
    .action                             the committed action while .phase is Phase.ACT
    .on_env_step(step_result)           outcome of the action; next step or the end
    .fail(reason)                       end with an error (failed LLM call, crashed env)
    .drain_records() -> [dict]          trajectory lines since the last call
    .metrics                            EpisodeMetrics (calls, tokens, commands, fallbacks)
  AgentConfig(layout="cached"|"paper"|"paper_first", two_model, specialist_adapter,
              memory_sampling, action_sampling, seed);  SamplingConfig
  prompts: build_messages, system_text, history_text, file_index_text, shared_prefix_len
  observers: StepView, run_observers, register_observer, available_observers
  trajectory: TrajectoryWriter, read_trajectory, iter_records, is_finished, replay_memory

Nothing here calls an LLM or steps an env: `automem.rollout` drives agents
in lock-step so that all episodes' requests go out together.
"""

from automem.agent import prompts
from automem.agent.episode import (
    COMMIT_PROMPT,
    AgentConfig,
    AgentRequest,
    EpisodeAgent,
    Phase,
    SamplingConfig,
)
from automem.agent.metrics import EpisodeMetrics
from automem.agent.observers import StepView, available_observers, register_observer, run_observers
from automem.agent.trajectory import (
    TrajectoryWriter,
    is_finished,
    iter_records,
    read_trajectory,
    replay_memory,
)

__all__ = [
    "COMMIT_PROMPT",
    "AgentConfig",
    "AgentRequest",
    "EpisodeAgent",
    "EpisodeMetrics",
    "Phase",
    "SamplingConfig",
    "StepView",
    "TrajectoryWriter",
    "available_observers",
    "is_finished",
    "iter_records",
    "prompts",
    "read_trajectory",
    "register_observer",
    "replay_memory",
    "run_observers",
]
