"""Loop 2, memory proficiency: collect, select, train LoRA specialists, race them, keep real gains.

Default (the embedded CPU run; offline): MiniHack Corridor with the tiny local model (2-step
episodes), 4 collection episodes on train seeds plus 4 synthetic well-formed episodes (the
tiny model writes almost nothing selectable), usage selection, two LoRA recipes
(rank 4 and 8, 5 epochs), one halving rung of 2 selection seeds, the survivor raced
against the base agent on 2 + 2 selection seeds, then the chosen specialist (accepted or, at
this scale, the best raced one: `final.always`) once on 2 test seeds against the base.

  python -m experiments.improve_proficiency --workdir=runs/loop2

Expected (measured on the shared 2-core machine, load average 3-6): 2m03s wall on a first
run (the agent's and the trainer's XLA compiles; 38 s to 1m26s with a warm compile cache), 22
episodes. Selection keeps 25 turns (1 from the tiny model's 4 episodes, 24 synthetic); each
recipe trains 17 steps (final masked loss 3.19 for rank 4, 3.05 for rank 8, from ~6.9);
halving prunes rank 8 after its rung (both arms score 0 on its seed); rank 4
races the base on 2 + 2 selection seeds and is "rejected_test" (sign test, no discordant
pair); with `final.always` it plays 2 test seeds: specialist 0.00 ± 0.00, base 0.00 ± 0.00,
paired +0.00 ± 0.00. Memory commands (LOG turns with only well-formed, successful
commands) on its selection seeds: 1/6 specialist, 1/6 base. Running it again on the same
workdir replays nothing (2 s).

Memory behaviour at a larger tiny scale (one rank-8 recipe, 20 epochs = 80 steps, 8
collection episodes, 4-step episodes, 12 selection seeds), 1m56s wall:

  python -m experiments.improve_proficiency --workdir=runs/loop2_measure \
      --config.grid.rank='(8,)' --config.grid.epochs='(20.0,)' --config.race.stages='(12,)' \
      --config.collect.episodes=8 --config.final.episodes=0 \
      --config.eval.game.minihack.max_steps=4

gave clean LOG turns 10/36 (28%) for the specialist against 2/36 (6%) for the base on the 12
selection seeds (not trained on); the training data were 4 real and 24 synthetic turns, so
the specialist mostly learnt the synthetic command format. Progression stayed 0 for both.

Paper scale (one SGLang server with --enable-lora serving the base model and every candidate
adapter; the authors' recipes: Crafter rank 256 / alpha 512 on attention, 4 epochs; MiniHack
rank 128 / alpha 256 on all projections, 3 epochs; NetHack rank 256 / alpha 512, 1 epoch; lr
5e-5, 300-800 selected examples):

  python -m sglang.launch_server --model-path Qwen/Qwen2.5-32B-Instruct --enable-lora \
      --max-lora-rank 256 --lora-target-modules all --port 30000
  python -m experiments.improve_proficiency \
      --config=experiments/configs/improve_proficiency.py:full,game=crafter \
      --config.eval.llm.base_url=http://127.0.0.1:30000 \
      --config.train.model.checkpoint=/models/Qwen2.5-32B-Instruct --workdir=runs/loop2_crafter

Expected: 200 collection episodes, 6 recipes x training on the selected turns, halving rungs of
10 + 20 selection seeds, a race of 25 x 4 + 40 confirmation seeds, 30 test seeds at the end; not
run here (no GPU node), so no wall time or result is claimed.

Variants (after `improve_proficiency.py:`, comma-separated):
  full                  paper scale: SGLang agent, BALROG step caps, the paper's recipes
  game=NAME             crafter | minihack | nethack
  rounds=N              expert-iteration rounds (round k > 0 collects with the specialist)
  structure=PATH        a structure file (default: the game's v0)
  loop1=DIR             Loop 1's run dir: its incumbent revision is the structure
  deploy=KIND           local | sglang: the agent's server, where adapters are served too
                        (default: local, sglang with full)
"""

from __future__ import annotations

import ml_collections

from automem.utils import parse_arg
from experiments.configs import evaluate as evaluate_config
from experiments.configs import select_decisions as select_config
from experiments.configs import train_proficiency as train_config

VARIANTS = ("full", "game=crafter,full", "game=nethack,full,rounds=2", "deploy=sglang")

# The authors' recommended recipes per game (rank, alpha, lr, epochs, targets, examples).
PAPER_RECIPES = {"crafter": (256, 512.0, 5e-5, 4.0, "attn", 600),
                 "minihack": (128, 256.0, 5e-5, 3.0, "all", 300),
                 "nethack": (256, 512.0, 5e-5, 1.0, "all", 800)}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, full=False, game="minihack", rounds=1, structure="", loop1="", deploy="")
  full, game = a["full"], a["game"]
  c = ml_collections.ConfigDict()
  c.game = game  # the game whose agent gets a memory specialist
  c.structure = a["structure"]  # memory structure file ("" = Loop 1's best or the game's v0)
  c.structure_workdir = a["loop1"]  # Loop 1 run dir whose incumbent is used ("" = none)
  c.rounds = a["rounds"]  # rounds; round k > 0 collects with round k-1's specialist (expert it.)
  c.seed_offset = 0  # first selection seed index; each round uses the next window of fresh seeds
  c.base_two_model = False  # the base arm: single-model agent (True: two-model, no adapter)
  c.max_recipes = 0  # cap on the recipe grid's size (0 = every combination)

  c.collect = ml_collections.ConfigDict()
  c.collect.episodes = 200 if full else 4  # train-seed episodes collected per round
  c.collect.offset = 0  # first train seed index (round k: offset + k * episodes)
  c.collect.max_steps = 0  # their step cap (0 = the eval config's)
  # Extra trajectory sources selected from with the collection (comma-separated run dirs or
  # trajectory files on train seeds); the default adds synthetic well-formed episodes because
  # the tiny model writes almost no selectable command.
  c.collect.extra_sources = ""
  c.collect.synthetic_episodes = 0 if full else 4  # synthetic episodes added to the data

  # The recipe grid: every combination is one specialist (see automem.proficiency.recipes).
  c.grid = ml_collections.ConfigDict()
  if full:
    rank, alpha, lr, epochs, targets, examples = PAPER_RECIPES[game]
    # "filters/scorers" selector combinations, each a ';'-list
    c.grid.selectors = ("usage", "top_episodes/usage", "top_episodes/usage;requery")
    c.grid.examples = (examples, 2 * examples)  # best-ranked selected turns kept (0 = all)
    c.grid.rank = (rank,)  # LoRA rank
    c.grid.alpha = (alpha,)  # LoRA alpha (scale alpha / rank)
    c.grid.targets = (targets,)  # "attn" | "all" (attention, or attention and MLP projections)
    c.grid.lr = (lr,)  # peak learning rate
    c.grid.epochs = (epochs,)  # passes over the training rows
  else:
    c.grid.selectors = ("usage",)  # "filters/scorers" selector combinations
    c.grid.examples = (0,)  # best-ranked selected turns kept (0 = all)
    c.grid.rank = (4, 8)  # LoRA rank
    c.grid.alpha = (16.0,)  # LoRA alpha
    c.grid.targets = ("all",)  # LoRA targets
    c.grid.lr = (3e-3,)  # peak learning rate
    c.grid.epochs = (5.0,)  # passes over the training rows

  c.halving = ml_collections.ConfigDict()
  c.halving.rungs = (10, 20) if full else (2,)  # fresh selection seeds per halving rung
  c.halving.eta = 2  # keep the best 1/eta of the live recipes after each rung

  c.race = ml_collections.ConfigDict()
  c.race.stages = (25, 25, 25, 25) if full else (2, 2)  # fresh selection seeds per race stage
  c.race.confirm_seeds = 40 if full else 0  # fresh seeds of the confirmation block
  c.race.level = 0.10  # one-sided level of the final test
  c.race.drop_alpha = 0.05  # one-sided level of the early-drop test
  c.race.test = "sign" if game == "minihack" else "bootstrap"  # sign test on binary outcomes
  c.race.bootstrap_samples = 1000  # resamples per bootstrap bound
  c.race.seed = 0  # bootstrap seed
  c.race.metric = "progression"  # score of an episode: progression | return | dense

  c.final = ml_collections.ConfigDict()
  c.final.episodes = 30 if full else 2  # test seeds for the chosen specialist and the base
  c.final.offset = 0  # first test seed index
  c.final.max_steps = 0  # step cap (0 = the eval config's)
  c.final.always = not full  # with no accepted recipe, test the best raced one (marked so)

  backend = "sglang" if full else "local"
  c.deploy = a["deploy"] or backend  # where adapters are served: local | sglang

  s = select_config.get_config()
  # Decision selection settings (experiments/configs/select_decisions.py); each recipe's
  # selector combination replaces `filters` and `scorers`.
  c.select = s

  t = train_config.get_config("gpu" if full else "steps=20,row_length=256,micro_batch=4,accum=1")
  t.eval_every = 0  # eval only at the end
  t.checkpoint.every = 10  # checkpoints (a killed run resumes from the last)
  t.tensorboard = False  # metrics.jsonl only
  t.data.val_fraction = 0.0 if not full else 0.05  # share of episodes held out
  # The trainer's settings (experiments/configs/train_proficiency.py); every recipe sets
  # the rank, alpha, targets, lr, steps (from epochs), the data and the base checkpoint.
  c.train = t

  e = evaluate_config.get_config(f"games={game},backend={c.deploy}" + (",full" if full else ""))
  e.progress = False  # no progress bar per evaluation
  if not full:
    g = e.game[game]
    g.max_steps = 2  # the embedded run's step cap
    g.envs_per_task = 2  # concurrent episodes per task
    if game == "minihack":
      g.tasks = ("MiniHack-Corridor-R3-v0",)  # one task in the embedded run
  # The agent, its LLM and the game settings of every episode the loop plays
  # (experiments/configs/evaluate.py).
  c.eval = e
  return c
