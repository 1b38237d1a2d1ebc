"""Rollouts: many LOG/PLAN episodes at once, resumable run directories, metrics.

Public API::

  Runner(run_dir, setups, plans, clients, agent_config, keep_errored=False,
         outage=OutagePolicy(wait_s, backoff_s, backoff_max_s)).run() -> summary
                                       raises RunStopped (one-line reason) when a server
                                       stays unreachable; a rerun resumes
  GameSetup(game, structure, env_kwargs, envs_per_task);  EpisodePlan(episode_id, game, task, seed)
  RunDir(root): config.json, structures/, trajectories/, memory/, metrics/, summary.json, tb/
    .episode_state(id) -> EpisodeState(status finished|errored|unfinished, metrics, error)
  episode_id(game, task, seed)
  seeds(name, num, offset=0), seed_set_of(seed), SEED_SETS   named disjoint seed sets
  EpisodeMetrics, summarize(records), format_summary(summary), mean_ci95(values)
  evaluate(config, workdir, env_factory=None, clients=None) -> summary
                                       the whole evaluation job (experiments/evaluate.py);
                                       config.backend="ray" spreads it over a Ray cluster
  run_jobs_on_ray([EvalJob(run_dir, setups, plans, agent_config, llm)], ray_config) -> summaries
                                       several runs' episodes at once over a Ray cluster
  racing: race(candidates, play, RaceConfig) -> RaceResult   paired staged racing (both loops)
          bootstrap_bound, sign_test_p, paired_gains, paired_summary, simulate, simulate_greedy
"""

from automem.rollout import racing
from automem.rollout.evaluate import evaluate
from automem.rollout.metrics import EpisodeMetrics, format_summary, mean_ci95, summarize
from automem.rollout.ray_backend import EvalJob, run_jobs_on_ray, run_on_ray
from automem.rollout.rundir import EpisodeState, RunDir, episode_id
from automem.rollout.runner import EpisodePlan, GameSetup, OutagePolicy, Runner, RunStopped
from automem.rollout.seeds import SEED_SETS, seed_set_of, seeds

__all__ = [
    "SEED_SETS",
    "EpisodeMetrics",
    "EpisodePlan",
    "EpisodeState",
    "EvalJob",
    "GameSetup",
    "OutagePolicy",
    "RunDir",
    "RunStopped",
    "Runner",
    "episode_id",
    "evaluate",
    "format_summary",
    "mean_ci95",
    "racing",
    "run_jobs_on_ray",
    "run_on_ray",
    "seed_set_of",
    "seeds",
    "summarize",
]
