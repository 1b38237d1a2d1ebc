"""The AutoMem pipeline: v0 evaluation, Loop 1, Loop 2, final evaluation, report.

  python -m experiments.automem --workdir=runs/automem              # tiny, CPU
  python -m experiments.automem --config=experiments/configs/automem.py:paper \\
      --config.eval.llm.base_url=http://127.0.0.1:30000 --workdir=runs/automem_32b
  python -m experiments.sweep --variants='ablation=structure_only;ablation=both' \\
      --root=runs/sweep                                              # several, side by side

Stages run in order in one workdir, each in its own subdirectory; a stage is
done when `<stage>/stage_summary.json` exists, so a rerun resumes (and an
evaluation stage resumes episode by episode, Loop 1 round by round, Loop 2
recipe by recipe). Loop 1 runs `automem.structure.optimize_structure` once per
game in `loop1/<game>/` (config section `loop1`; its lineage goes into the
report). Loop 2 runs `automem.proficiency.improve_proficiency` for one game
(`loop2.game`, default the first evaluated game) in `loop2/<game>/`, starting
from Loop 1's structure for that game; the final stage plays its specialist
(two-model agent: the adapter for memory turns, the base for actions) on that
game. Either loop can be fed from an artifact instead:
`--config.artifacts.structure=FILE` (or `game=FILE;game=FILE`),
`--config.artifacts.adapter=DIR`, or skipped (`--config.skip=loop2`).

Expected (tiny default, measured): 7m46s wall on a 2-core machine from empty caches
(AUTOMEM_CACHE pointing at an empty directory), about 6 minutes of it building and
pretraining the tiny model once, then every XLA program compiled; under a minute with warm
caches. v0 plays 6 episodes (2 per game; measured fallback rate 0.00 on Crafter and
NetHack, 0.12 on MiniHack, progression 0), Loop 1 one round with one offline candidate per
game raced on 2 selection seeds and 1 confirmation seed, Loop 2 collects 4 Crafter episodes,
trains one rank-4 LoRA recipe (37 steps, masked loss from about 5.2 to 0.7), halves and
races it on selection seeds, and the final stage plays the specialist on Crafter's test
seeds.
The tiny model plays at random and scores 0, so every Loop 1 candidate is
"rejected_test" and the Loop 2 specialist is not accepted either; with
`loop2.report_unaccepted` (tiny) it is still played as `v0+train` so the report shows the
row, marked unaccepted in the stage summary.

Variants (after `automem.py:`, comma-separated):
  tiny                 (default) the embedded evaluation, a one-round Loop 1 per game and a
                       one-recipe Loop 2, CPU, tiny local model
  paper                the paper's budgets: evaluate.py:full (SGLang server, BALROG step
                       caps, all eight MiniHack tasks), optimize_structure.py:full with the
                       tool-using reviewer; runs Loop 1 and Loop 2
  games=G1;G2          games to play
  episodes=N           episodes per task
  steps=N              step cap per episode (0 = the variant's default)
  ablation=NAME        structure_only (Loop 1, no training) | training_only (Loop 2 on v0)
                       | both | none (v0 only)
  selector=NAME        Loop 2 on v0 with one decision selector alone: a scorer (usage, requery,
                       counterfactual, judge) or a filter (top_episodes, near_unlock)
  proposer=KIND        Loop 1's proposer: offline (no LLM) | reviewer (tool-using LLM)
                       | single_shot (JSON schema)
  api=NAME             the reviewer's API: openai | anthropic
  layout=NAME          the agent's prompt layout: cached (ours) | paper
"""

from __future__ import annotations

import ml_collections

from automem.utils import parse_arg
from experiments.configs import (
    evaluate,
    improve_proficiency,
    optimize_structure,
    select_decisions,
)

VARIANTS = ("paper", "games=crafter,episodes=1,steps=2", "ablation=structure_only",
            "ablation=training_only", "ablation=both", "ablation=none",
            "selector=usage", "selector=requery", "selector=counterfactual", "selector=judge",
            "selector=top_episodes", "selector=near_unlock",
            "ablation=structure_only,proposer=reviewer,api=anthropic",
            "ablation=structure_only,proposer=offline", "layout=paper", "layout=cached",
            "paper,layout=paper")

ABLATIONS = {  # ablation -> the loops it skips
    "": None, "none": "loop1,loop2", "structure_only": "loop2", "training_only": "loop1",
    "both": "",
}
SCORERS = ("usage", "requery", "counterfactual", "judge")
FILTERS = ("top_episodes", "near_unlock")


def _loop1(paper: bool, proposer: str, api: str) -> ml_collections.ConfigDict:
  """Loop 1's settings (optimize_structure.py) without its game and evaluation: the pipeline
  runs the loop once per game of `eval.games` with the pipeline's evaluation config."""
  parts = ["full"] if paper else []
  parts += [f"proposer={proposer}", f"api={api}"]
  c = optimize_structure.get_config(",".join(parts))
  with c.unlocked():
    del c["eval"]
    del c["game"]
  if not paper:  # the tiny budget: one round, one candidate, a 2-seed race, 1-seed confirmation
    c.rounds = 1  # rounds of propose -> race -> decide
    c.race.stages = (2,)  # fresh selection seeds per race stage (one stage)
    c.race.confirm_seeds = 1  # fresh seeds of the confirmation block
    c.review.episodes = 1  # train-seed episodes of the parent the proposer reads
  # The pipeline's final stage evaluates the result on test seeds; the loop's own
  # final table would repeat it.
  c.final.episodes = 0
  # Per-game choices ("auto": sign test on MiniHack's binary outcomes, else bootstrap;
  # the dense milestone metric on NetHack, else progression), as optimize_structure.py.
  c.race.test = "auto"  # race test: auto | bootstrap | sign
  c.race.metric = "auto"  # race score: auto | progression | return | dense
  # Games whose structure Loop 1 optimises ("" = every game of eval.games); the others
  # keep v0 in the final stage.
  c.games = ""
  return c


def _loop2(paper: bool, selector: str) -> ml_collections.ConfigDict:
  """Loop 2's settings: improve_proficiency.py's (without its game, structure and evaluation,
  which come from the pipeline) and the decision selection of the selector ablations."""
  c = ml_collections.ConfigDict()
  c.game = ""  # the game Loop 2 trains a specialist for ("" = the first of eval.games)
  # With no accepted recipe, still evaluate the best raced specialist in the final stage
  # (marked unaccepted in the stage summary), so a tiny run shows a +train row.
  c.report_unaccepted = not paper
  p = improve_proficiency.get_config("full" if paper else None)
  with p.unlocked():
    for key in ("eval", "game", "structure", "structure_workdir"):
      del p[key]
  if not paper:  # the tiny budget: one recipe, a 2-seed race
    p.grid.rank = (4,)  # LoRA rank
    p.race.stages = (2,)  # fresh selection seeds of the race (one stage)
  if selector:
    spec = selector if selector in SCORERS else f"{selector}/usage"
    p.grid.selectors = (spec,)  # the ablation's selector (a filter is paired with usage)
  # improve_proficiency.py's settings (see there); the pipeline sets game, structure, eval.
  c.proficiency = p
  # Which memory decisions Loop 2 trains on (experiments/configs/select_decisions.py; the
  # paper's LLM judge at paper scale).
  c.selection = select_decisions.get_config("paper" if paper else None)
  if selector in SCORERS:
    c.selection.scorers = (selector,)  # the one scorer
    c.selection.filters = ()  # no outcome filter
  elif selector in FILTERS:
    c.selection.scorers = ()  # no scorer (ranked as post-processed)
    c.selection.filters = (selector,)  # the one outcome filter
  elif selector:
    raise ValueError(f"unknown selector {selector!r}; scorers: {', '.join(SCORERS)}; "
                     f"filters: {', '.join(FILTERS)}")
  c.selector = selector  # the one selector of a selector ablation ("" = the selection above)
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, tiny=False, paper=False, games="", episodes=-1, steps=0, ablation="",
                selector="", proposer="", api="", layout="")
  if a["ablation"] not in ABLATIONS:
    raise ValueError(f"unknown ablation {a['ablation']!r}; known: "
                     f"{', '.join(k for k in ABLATIONS if k)}")
  paper = a["paper"]
  parts = ["full"] if paper else []
  if a["games"]:
    parts.append(f"games={a['games']}")
  if a["episodes"] > 0:
    parts.append(f"episodes={a['episodes']}")
  if a["steps"] > 0:
    parts.append(f"steps={a['steps']}")
  if a["layout"]:
    parts.append(f"layout={a['layout']}")
  c = ml_collections.ConfigDict()
  # The evaluation every evaluating stage runs (v0, and each final version on the same seeds);
  # Loop 1 plays its races with it too, on selection seeds.
  c.eval = evaluate.get_config(",".join(parts) or None)
  c.stages = "v0,loop1,loop2,final,report"  # stage order (a subset runs only those)
  # Stages not to run (comma-separated): the ablation's; a selector ablation trains v0 (no
  # Loop 1); by default both loops run.
  skip = ABLATIONS[a["ablation"]]
  if skip is None:
    skip = "loop1" if a["selector"] else ""
  c.skip = skip  # see above
  c.ablation = a["ablation"] or ("selector" if a["selector"] else "")  # its name, for tables
  # Loop 1: optimize_structure.py's settings (see there), one run per game in loop1/<game>/.
  c.loop1 = _loop1(paper, a["proposer"] or ("reviewer" if paper else "offline"),
                   a["api"] or ("anthropic" if paper else "openai"))
  c.loop2 = _loop2(paper, a["selector"])  # Loop 2's settings (read by the plugged-in loop)
  c.artifacts = ml_collections.ConfigDict()
  c.artifacts.structure = ""  # Loop 1's result instead of running it: FILE or game=FILE;...
  c.artifacts.adapter = ""  # Loop 2's result instead of running it: a PEFT adapter directory
  c.report = ml_collections.ConfigDict()
  c.report.seed_set = c.eval.seed_set  # the table's seed set (the evaluation's)
  c.report.viewer = True  # also export a static trace viewer per version (report/viewer/)
  return c
