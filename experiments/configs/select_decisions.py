"""Loop 2 decision selection: which memory turns of a run to train on.

Default (offline, no LLM): the paper's deterministic post-processing plus usage
credit from the logs, on every finished trajectory of the given run dirs.

  python -m experiments.select_decisions \
      --config=experiments/configs/select_decisions.py --runs=runs/train_v0 \
      --workdir=runs/train_v0/selection

Variants (after `select_decisions.py:`, comma-separated):
  paper                 the paper's way: an LLM judge (openai backend) + post-processing
  all                   every selector: top episodes, near-unlock, usage, re-query,
                        counterfactual, judge (re-query and forks use the policy endpoint)
  scorers=a;b           any of usage;requery;counterfactual;judge
  filters=a;b           any of top_episodes;near_unlock
  keep=X                keep the best fraction X of the ranked turns
  horizon=N samples=N   counterfactual window and paired samples
  judge_items=N         judge a stratified sample of N turns (0 = all)
"""

from __future__ import annotations

import ml_collections

from automem.llm import default_llm_config
from automem.utils import parse_arg

VARIANTS = ("paper", "all", "scorers=usage;requery,keep=0.5", "filters=near_unlock,horizon=4")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, paper=False, all=False, scorers="usage", filters="", keep=1.0, horizon=8,
                samples=2, judge_items=0)
  scorers = tuple(s for s in a["scorers"].split(";") if s)
  filters = tuple(s for s in a["filters"].split(";") if s)
  if a["paper"]:
    scorers, filters = ("judge",), ()
  if a["all"]:
    scorers = ("usage", "requery", "counterfactual", "judge")
    filters = ("top_episodes", "near_unlock")
  c = ml_collections.ConfigDict()
  c.scorers = scorers  # scorers run on the filtered candidates, then combined (ranked, weighted)
  c.filters = filters  # outcome filters applied in order before scoring
  c.allow_test_seeds = False  # refuse test-set episodes (selection must never see them)
  # Admit selection-set episodes (off: Loop 2 trains on train episodes only, so the selection
  # set stays an unbiased judge of the adapters trained on them).
  c.allow_selection_seeds = False

  c.deterministic = ml_collections.ConfigDict()
  c.deterministic.phases = ("log", "plan")  # phases whose turns are candidates
  c.deterministic.done_is_memory_op = True  # a LOG turn with only DONE counts (the paper's rule)
  c.deterministic.drop_failed = True  # failed commands are not trained
  c.deterministic.drop_errored_turns = True  # turns whose LLM call failed are dropped

  c.top_episode_fraction = 0.5  # top_episodes: keep the best half of each game's episodes
  c.unlock_window = 10  # near_unlock: turns at most this many steps before an unlock

  c.combine = ml_collections.ConfigDict()
  c.combine.weights = {}  # scorer -> weight in the combined score (default 1 each)
  c.combine.keep_fraction = a["keep"]  # keep the best fraction of ranked turns
  c.combine.min_score = ml_collections.FieldReference(None, field_type=float)
  # ^ and only those with a combined score (percentile mean, [0, 1]) of at least this
  c.combine.balance_games = False  # the same number of turns from every game
  c.combine.balance_cap = 0  # per-game cap when balancing (0 = the smallest game's count)
  c.combine.min_weight = 0.5  # loss weight of the lowest-ranked kept turn
  c.combine.max_weight = 1.5  # loss weight of the highest-ranked kept turn

  c.requery = ml_collections.ConfigDict()
  c.requery.samples = 4  # samples per arm (kept / withheld lines), paired seeds
  c.requery.seed = 0  # first sampling seed
  c.requery.max_steps = 64  # PLAN steps re-queried at most
  c.requery.temperature = ml_collections.FieldReference(None, field_type=float)
  # ^ None: the temperature the run used for actions
  c.requery.max_new_tokens = ml_collections.FieldReference(None, field_type=int)
  # ^ None: the run's action token budget

  c.counterfactual = ml_collections.ConfigDict()
  c.counterfactual.horizon = a["horizon"]  # K env steps played after each fork
  c.counterfactual.samples = a["samples"]  # paired samples per decision (both arms each)
  c.counterfactual.max_decisions = 64  # decisions forked at most (largest memory change first)
  c.counterfactual.seed = 0  # base of the forks' agent seeds
  c.counterfactual.metric = "progression"  # credited outcome: progression | reward | unlocks
  c.counterfactual.batch = 64  # forks per batched env (Craftax: one vmapped step for all)

  c.judge = ml_collections.ConfigDict()
  c.judge.rubric = ""  # rubric file ("" = automem/credit/rubrics/judge.md)
  c.judge.max_items = a["judge_items"]  # 0: every candidate; else a stratified sample
  c.judge.seed = 0  # sample and sampling seed
  c.judge.prompt_chars = 2000  # characters of the turn's prompt shown to the judge
  c.judge.temperature = 0.0  # judge sampling temperature
  c.judge.max_new_tokens = 200  # judge answer budget

  # The policy model (re-query, counterfactual forks): the model that played the run.
  c.policy_llm = default_llm_config("sglang")
  # The judge: an OpenAI-compatible endpoint (model and key via --config.judge_llm.*).
  c.judge_llm = default_llm_config("openai")
  return c
