"""Loop 1, structure optimisation: propose revisions, race them on selection seeds, keep real gains.

Default (the embedded CPU run; offline, no API): Crafter with the tiny local
model (episodes capped at 2 steps) and the offline proposer; two rounds of
one candidate raced against the incumbent on 2 + 2 selection seeds with a
1-seed confirmation block, then every accepted version on 2 test seeds.

  python -m experiments.optimize_structure --workdir=runs/loop1

Expected (measured): 5m24s wall on the shared 2-core machine under a load average of about 5
(3 CPU-minutes of the process itself; 17m50s under a load of ~15; a first run also builds
the tiny model, about a CPU-minute), 20 episodes. The tiny model scores 0 everywhere, so
every candidate is "rejected_test" (bootstrap lower bound 0.00): round 0 races the offline
proposal "more PLAN turns and a longer history (many fallback actions)", round 1 "pin the
tail of actions_log.txt into every PLAN prompt" plus the one continuation of round 0's
candidate; the final table is v0 alone, 0.00 ± 0.00 on 2 test seeds. The run dir holds
lineage.jsonl (one record per candidate, with per-seed results and the decision's
statistics), revisions/v0.json, structures/, rounds/r*/proposals.json, one ordinary
evaluation run dir per (round, block, arm) under evals/, final.json and summary.json.
Running it again on the same workdir replays nothing (2 s).

Paper scale (SGLang agent on a GPU node, Claude as a tool-using reviewer):

  python -m experiments.optimize_structure \
      --config=experiments/configs/optimize_structure.py:full,proposer=reviewer,api=anthropic \
      --config.eval.llm.base_url=http://127.0.0.1:30000 --workdir=runs/loop1_crafter

Expected: per round 1 candidate on 100 raced + 40 confirmation fresh selection seeds: about
200 Crafter episodes of up to 2000 steps when the candidate fails the bound, 280 when it is
confirmed (measured by `python benchmarks/sim_racing.py`, 2000 simulated rounds with
per-episode SD 13: false accepts 5.5%, power 88% for a +5-point gain, against 50% and 80%
for the authors' 10-episode greedy rule at 10 episodes per round), plus 8 review
episodes per new parent and 30 test episodes per accepted version at the end; 10 rounds are
about 2,000-3,000 episodes. Its wall time was not measured here (no GPU node); it scales
with the SGLang server's throughput on 2000-step Crafter episodes. The result:
revisions/vK.json for every accepted revision and final.json with the v0..vK test table
(mean ± 95% CI, paired differences against v0 and the previous version).

Variants (after `optimize_structure.py:`, comma-separated):
  full                  paper scale: BALROG step caps, SGLang agent, the default race budget
  game=NAME             crafter | minihack | nethack (nethack screens on 2,000-step episodes
                        with the dense milestone metric and confirms on full ones; minihack
                        uses the exact sign test on its binary outcomes)
  rounds=N              rounds of the loop
  candidates=N          proposals raced per round
  proposer=KIND         offline | reviewer (tool-using) | single_shot (JSON schema)
  api=NAME              reviewer API: openai | anthropic
  calibrate             A/A calibration: v0 against v0 with another sampling-seed base
"""

from __future__ import annotations

import ml_collections

from automem.llm import default_llm_config
from automem.utils import parse_arg
from experiments.configs import evaluate as evaluate_config

VARIANTS = ("full", "game=minihack", "game=nethack,full", "proposer=reviewer,api=anthropic",
            "proposer=single_shot", "calibrate")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, full=False, game="crafter", rounds=0, candidates=0, proposer="offline",
                api="openai", calibrate=False)
  full, game = a["full"], a["game"]
  c = ml_collections.ConfigDict()
  c.game = game  # the game whose memory structure is optimised
  c.seed_set = "selection"  # the only set the loop compares on (anything else is refused)
  c.seed_offset = 0  # first selection seed index; round r uses the next window of fresh seeds
  c.rounds = a["rounds"] or (10 if full else 2)  # rounds of propose -> race -> decide
  c.candidates = a["candidates"] or 1  # proposals raced per round (the test level is split)
  c.max_episodes = 0  # stop starting rounds once this many episodes were played (0 = no cap)
  c.pareto_every = 3  # every N rounds the parent is sampled from the Pareto front (0 = never)
  c.merge_every = 2  # every N rounds, race a merge of two accepted siblings if any (0 = never)
  c.continuation = True  # a rejected candidate gets one continuation in the next round
  c.calibrate = a["calibrate"]  # A/A: race v0 against v0 with another sampling-seed base
  c.calibrate_seed_shift = 1_000  # added to eval.agent.seed for the A/A copy of v0

  c.race = ml_collections.ConfigDict()
  # Fresh selection seeds per race stage; the candidate that is clearly worse than the
  # incumbent or the best candidate is dropped after each stage.
  c.race.stages = (25, 25, 25, 25) if full else (2, 2)
  c.race.confirm_seeds = 40 if full else 1  # fresh seeds of the confirmation block
  c.race.level = 0.10  # one-sided level of the final test (split over the candidates)
  c.race.drop_alpha = 0.05  # one-sided level of the early-drop test
  # "bootstrap": paired-bootstrap lower bound of the mean gain; "sign": exact sign test on
  # discordant pairs (binary outcomes: MiniHack's 0/100 progression).
  c.race.test = "sign" if game == "minihack" else "bootstrap"
  c.race.bootstrap_samples = 1000  # resamples per bootstrap bound
  c.race.seed = 0  # seed of the bootstrap and of the Pareto-parent draw
  # Score of a race episode: progression | return | dense (progression + deepest level + XP
  # level + NetHack score / 100; automem.structure.arms.dense_score).
  c.race.metric = "dense" if game == "nethack" else "progression"
  c.race.max_steps = 2000 if (game == "nethack" and full) else 0  # race step cap (0 = eval's)
  c.confirm = ml_collections.ConfigDict()
  c.confirm.metric = "progression"  # score of a confirmation episode
  c.confirm.max_steps = 0  # confirmation step cap (0 = the eval config's, full episodes)

  c.review = ml_collections.ConfigDict()
  # Train-seed episodes of the parent whose traces the proposer reads (0: none).
  c.review.episodes = 8 if full else 2
  c.review.offset = 0  # first train seed index of the review episodes
  c.review.max_steps = 0  # their step cap (0 = the eval config's)

  c.final = ml_collections.ConfigDict()
  c.final.episodes = 30 if full else 2  # test seeds per accepted version at the end (0 = skip)
  c.final.offset = 0  # first test seed index
  c.final.max_steps = 0  # step cap (0 = the eval config's)

  c.rules = ml_collections.ConfigDict()
  c.rules.require_structural = True  # a revision must change structure, not only wording
  c.rules.model_owned_memory = True  # no pre-written notes; LOG keeps a write op
  c.rules.harness_files = ()  # files declared harness-maintained (may be pre-filled)
  # May a revision pre-fill read-only files (reference text)? Off: that is the harness writing
  # notes for the model all the same.
  c.rules.allow_reference_files = False

  p = c.proposer = ml_collections.ConfigDict()
  p.kind = a["proposer"]  # offline | reviewer (tool calling) | single_shot (JSON schema)
  # The reviewer's endpoint: an OpenAI-compatible chat API with tool calling (a hosted
  # model, or SGLang serving an open model with --tool-call-parser) or Anthropic's API.
  p.llm = default_llm_config(a["api"])
  p.max_tool_calls = 40  # tool calls per proposal before the reviewer must submit
  p.max_tokens = 400_000  # prompt + completion tokens per proposal
  p.max_wall_s = 1800.0  # wall time per proposal, seconds
  p.max_invalid = 3  # invalid revisions (StructureError / rule) sent back before giving up
  p.max_new_tokens = 4096  # completion cap per reviewer call
  p.temperature = 0.2  # reviewer sampling temperature
  p.seed = 0  # sampling seed of proposal session i of a round: seed + i (sessions differ)

  e = evaluate_config.get_config(f"games={game}" + (",full" if full else ""))
  e.seed_set = "selection"  # set per evaluation by the loop
  if not full:
    e.game[game].max_steps = 2  # the embedded run's step cap
    e.game[game].envs_per_task = 2  # concurrent episodes per task
  # The agent, its LLM and the game settings of every evaluation the loop runs
  # (experiments/configs/evaluate.py; structure_overrides shape v0).
  c.eval = e
  return c
