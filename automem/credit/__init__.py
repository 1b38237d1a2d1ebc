"""Loop 2's decision selection: which memory turns of the agent's own play to train on.

Every selector takes trajectories (read with `automem.agent.read_trajectory`)
and returns `ScoredTurn`s (turn, command indices, score, reason); they
combine as filter -> rank -> weight into `selected_turns.jsonl`, the
trainer's input (`automem.proficiency.selection`).

Public API::

  # candidates and filters (no LLM)
  ScoredTurn;  DeterministicConfig, deterministic_candidates   the paper's post-processing
  top_episodes, near_unlock, balance_games                     outcome filters
  episode_usage, usage_scores                                  usage credit from the logs
  # LLM-backed and env-backed scorers
  RequeryConfig, requery_scores                                influence by re-query
  CounterfactualConfig, plan_forks, run_forks, counterfactual_scores
  replay_prefixes, check_replay                                exact replays from seed + actions
  JudgeConfig, judge_scores, DEFAULT_RUBRIC                    LLM judge with a rubric file
  # the whole step (experiments/select_decisions.py)
  SelectionConfig, select_decisions, aselect_decisions, SelectedTurn, CombineConfig
"""

from automem.credit.combine import FILTERS, SCORERS, CombineConfig, SelectedTurn
from automem.credit.counterfactual import (
    CounterfactualConfig,
    counterfactual_scores,
    plan_forks,
    run_forks,
)
from automem.credit.filters import (
    DeterministicConfig,
    balance_games,
    deterministic_candidates,
    near_unlock,
    top_episodes,
)
from automem.credit.judge import DEFAULT_RUBRIC, JudgeConfig, judge_scores
from automem.credit.replay import check_replay, replay_prefixes
from automem.credit.requery import RequeryConfig, requery_scores
from automem.credit.scored import ScoredTurn
from automem.credit.select import SelectionConfig, aselect_decisions, select_decisions
from automem.credit.usage import episode_usage, usage_scores

__all__ = [
    "DEFAULT_RUBRIC", "FILTERS", "SCORERS", "CombineConfig", "CounterfactualConfig",
    "DeterministicConfig", "JudgeConfig", "RequeryConfig", "ScoredTurn", "SelectedTurn",
    "SelectionConfig", "aselect_decisions", "balance_games", "check_replay",
    "counterfactual_scores", "deterministic_candidates", "episode_usage", "judge_scores",
    "near_unlock", "plan_forks", "replay_prefixes", "requery_scores", "run_forks",
    "select_decisions", "top_episodes", "usage_scores",
]
