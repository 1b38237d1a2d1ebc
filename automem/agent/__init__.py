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
             (the library itself: automem.memory.observers)
  harness: pinned_text, update_harness_files, apply_retention, size_warnings, active_mode
  trajectory (the one schema and reader; Loop 1, Loop 2 and rollout read only these):
    read_trajectory(path) -> Trajectory   .header .turns .steps .end (typed records), .torn,
                                          .finished .progression .actions() .turn(step, phase, i)
                                          .turns_of_step(s) .unlock_steps() .replay_spec()
                                          .memory_before(step, phase, i) .memory_after(...)
    read_trajectories(paths, finished_only=) -> [Trajectory];  trajectory_files(paths)
    Header, Turn, Step, End (frozen; to_json/from_json; unknown keys in .extra),
    record_from_json, SCHEMA_VERSION, PHASE_ENDS, TrajectoryError
    TrajectoryWriter(path, header).write(records), write_trajectory, iter_records,
    is_finished, replay_memory

Trajectory keys the structure's features add (in each record's .extra): a turn
has "mode" (the mode it ran in, or None), "action_repair" {written, action} when an alias mapped the action,
"check_rejection" {check, action, reason} when an action check sent it back, and
"harness_diff" on the last LOG turn when the after_log hooks changed memory; a step
line has "harness_diff" (memory changes of the step_start hooks after its action).
`replay_memory` and `Trajectory.memory_before/after` apply a record's harness_diff
after its own memory_diff (a step's before the next step's turns).

Nothing here calls an LLM or steps an env: `automem.rollout` drives agents
in lock-step so that all episodes' requests go out together.
"""

from automem.agent import harness, prompts
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
    PHASE_ENDS,
    SCHEMA_VERSION,
    End,
    Header,
    Step,
    Trajectory,
    TrajectoryError,
    TrajectoryWriter,
    Turn,
    is_finished,
    iter_records,
    read_trajectories,
    read_trajectory,
    record_from_json,
    replay_memory,
    trajectory_files,
    write_trajectory,
)

__all__ = [
    "COMMIT_PROMPT",
    "PHASE_ENDS",
    "SCHEMA_VERSION",
    "AgentConfig",
    "AgentRequest",
    "End",
    "EpisodeAgent",
    "EpisodeMetrics",
    "Header",
    "Phase",
    "SamplingConfig",
    "Step",
    "StepView",
    "Trajectory",
    "TrajectoryError",
    "TrajectoryWriter",
    "Turn",
    "available_observers",
    "harness",
    "is_finished",
    "iter_records",
    "prompts",
    "read_trajectories",
    "read_trajectory",
    "record_from_json",
    "register_observer",
    "replay_memory",
    "run_observers",
    "trajectory_files",
    "write_trajectory",
]
