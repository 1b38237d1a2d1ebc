"""Evaluation: the LOG/PLAN memory agent playing episodes of every game.

Default (the embedded main job; offline, CPU, a few minutes): two short
episodes each of Crafter, MiniHack Corridor-R3 and NetHack with the tiny
local model (pretrained on scripted agent chats on the real games, rendered as the agent
renders its requests, so it writes real commands and commits offered actions); the scores
are meaningless, the pipeline is real. It writes a complete run directory (config,
structures, trajectories, memory, metrics, summary, TensorBoard events).

  python -m experiments.evaluate --config=experiments/configs/evaluate.py --workdir=runs/eval

Expected: under a minute on a quiet 2-core machine once the tiny model is built (the
first run builds and pretrains it, about 6 CPU-minutes, and compiles); every episode ends
at its step cap, mostly with progression 0, and most PLAN steps commit a valid action
(measured with `evaluate.py:episodes=6,steps=6`: 3% of PLAN steps fell back on Crafter,
3% on MiniHack, none on NetHack).
Running it again on the same workdir finds every episode finished and only
rewrites the summary.

Variants (after `evaluate.py:`, comma-separated):
  full                 paper-scale: all eight BALROG MiniHack tasks, BALROG step caps,
                       5 episodes per task, an SGLang server (`--config.llm.base_url=...`)
  games=G1;G2          games to play (crafter, minihack, nethack, crafter_original)
  episodes=N           episodes per task
  steps=N              step cap per episode for every game (0 = the game's default)
  seed_set=NAME        train | selection | test (named disjoint seed sets)
  backend=NAME         local | sglang | openai
  two_model            memory turns to the specialist, the action commit to the base model
  adapter=NAME         the specialist's LoRA adapter name (two-model mode)
  layout=NAME          cached (ours) | paper | paper_first (the paper's layout, for comparison)
  ray                  episodes spread over a Ray cluster (`--config.ray.address=HEAD:6379`;
                       launch/README.md), every node mounting the workdir
  structure=NAME       every game's structure: v0 | evolved (a shipped variant) | a JSON path;
                       per game: --config.game.<g>.structure=evolved
"""

from __future__ import annotations

import ml_collections

from automem.llm import default_llm_config
from automem.utils import parse_arg

VARIANTS = ("full", "games=minihack,episodes=1,steps=3", "two_model,adapter=memory",
            "layout=paper,backend=sglang", "full,ray", "structure=evolved")

# The eight MiniHack tasks of BALROG and the paper.
BALROG_MINIHACK = (
    "MiniHack-Boxoban-Hard-v0", "MiniHack-Boxoban-Medium-v0", "MiniHack-MazeWalk-9x9-v0",
    "MiniHack-MazeWalk-15x15-v0", "MiniHack-Corridor-R3-v0", "MiniHack-CorridorBattle-Dark-v0",
    "MiniHack-Quest-Easy-v0", "MiniHack-Quest-Medium-v0",
)


def _game(tasks: tuple[str, ...], max_steps: int, envs: int, episodes: int) -> ml_collections.ConfigDict:
  g = ml_collections.ConfigDict()
  g.tasks = tasks  # task ids; () = the game itself (one task named after the game)
  g.episodes = episodes  # episodes per task (-1 = config.episodes_per_task)
  g.max_steps = max_steps  # env step cap per episode
  g.envs_per_task = envs  # env slots (concurrent episodes) per task
  # The structure: "" or "v0" (the game's v0), a shipped variant ("evolved"), a shipped name
  # ("minihack_evolved") or a MemoryStructure JSON file.
  g.structure = ""
  # Changes applied to the structure as a revision (MemoryStructure.revise), nested by
  # path, e.g. {"log": {"max_iterations": 2}}; recorded in the run's structure file.
  g.structure_overrides = ml_collections.ConfigDict()
  g.env_kwargs = ml_collections.ConfigDict()  # extra make_env keyword arguments
  return g


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, full=False, games="", episodes=-1, steps=0, seed_set="test", backend="",
                two_model=False, adapter="", layout="cached", ray=False, structure="")
  full = a["full"]
  # -1 / 0 are the "not given" defaults; a given count must be positive (no silent coercion).
  if arg and any(i.split("=")[0].strip() == "episodes" for i in arg.split(",")) \
      and a["episodes"] < 1:
    raise ValueError(f"variant episodes={a['episodes']}: must be a whole number >= 1")
  if arg and any(i.split("=")[0].strip() == "steps" for i in arg.split(",")) and a["steps"] < 1:
    raise ValueError(f"variant steps={a['steps']}: must be a whole number >= 1")
  c = ml_collections.ConfigDict()
  games = a["games"].replace(";", ",") or "crafter,minihack,nethack"
  c.games = games  # comma-separated games to play, each configured under config.game.<name>
  c.seed_set = a["seed_set"]  # named seed set: train | selection | test (automem.rollout.seeds)
  c.seed_offset = 0  # first seed's index within the set
  c.episodes_per_task = a["episodes"] if a["episodes"] > 0 else (5 if full else 2)  # default count
  c.progress = True  # tqdm progress bar with live progression
  # Keep episodes that ended in an infrastructure error (server, engine, env) when the run
  # is resumed; by default they are played again.
  c.keep_errored = False
  # Seconds to wait (probing with backoff) for an LLM server that stays unreachable past its
  # retries before the run stops with exit status 3; a rerun on the same workdir resumes.
  c.outage_wait_s = 600.0
  # Where episodes run: "inprocess" (this process's runner) | "ray" (shards of episodes on
  # the Ray cluster below, each played by the same runner; automem.rollout.ray_backend).
  c.backend = "ray" if a["ray"] else "inprocess"
  c.ray = ml_collections.ConfigDict()
  c.ray.address = "auto"  # Ray cluster to join ("auto": the one `ray start` made here; "": new)
  c.ray.namespace = ""  # Ray namespace ("" = anonymous)
  c.ray.episodes_per_shard = 0  # episodes per Ray task (0 = the game's envs_per_task)
  c.ray.num_cpus_per_shard = 1.0  # CPUs a shard reserves (its env pool + runner)
  c.ray.num_gpus_per_shard = 0.0  # GPUs a shard reserves (0: the model is on SGLang servers)
  c.ray.max_retries = 3  # reruns of a shard whose worker or node died (finished episodes kept)
  c.ray.log_to_driver = True  # workers' logs printed by the driver

  steps = a["steps"]
  c.game = ml_collections.ConfigDict()
  # Step caps: `full` uses the env defaults (Crafter 2000, BALROG's MiniHack 100, NetHack
  # 100k with its no-progress timeout); the embedded default plays a handful of steps.
  # Craftax-Classic.
  c.game.crafter = _game((), steps or (2000 if full else 4), 4 if full else 2, -1)
  # The original crafter package (for comparison with Craftax).
  c.game.crafter_original = _game((), steps or (2000 if full else 4), 4 if full else 2, -1)
  # BALROG's MiniHack tasks (one in the embedded run).
  c.game.minihack = _game(BALROG_MINIHACK if full else ("MiniHack-Corridor-R3-v0",),
                          steps or (100 if full else 4), 4 if full else 2, -1)
  # The NetHack Challenge.
  c.game.nethack = _game(("NetHackChallenge-v0",), steps or (100_000 if full else 3),
                         4 if full else 2, -1)
  for name in ("crafter", "crafter_original", "minihack", "nethack"):
    c.game[name].structure = a["structure"]  # the `structure=` variant ("" = each game's v0)
  if not full:
    # Few turns per phase keep the CPU run short (two PLAN turns: a lookup, then the
    # commit). The tiny model's 4096-token window does not hold the v0 prompts with their
    # game knowledge, so the embedded run leaves that text out.
    for name in ("crafter", "crafter_original", "minihack", "nethack"):
      g = c.game[name]
      g.structure_overrides = ml_collections.ConfigDict({  # see _game
          "log": {"max_iterations": 2}, "plan": {"max_iterations": 2},
          "game_rules": "(left out of the embedded CPU run to fit the tiny model's context)"})

  c.agent = ml_collections.ConfigDict()
  c.agent.layout = a["layout"]  # prompt layout: "cached" (prefix-cache friendly) | "paper"
  c.agent.two_model = a["two_model"]  # memory turns -> specialist, action commit -> base model
  c.agent.specialist_adapter = a["adapter"]  # LoRA adapter of the specialist ("" = none)
  # Use `specialist_llm` as a second endpoint for the specialist (else the base client serves
  # both, with `specialist_adapter` on memory requests).
  c.agent.specialist_endpoint = False
  c.agent.seed = 0  # base of per-request sampling seeds (reproducible sampling)
  # Longest prompt (characters) before further turns of a phase are cut short (0 = no cap):
  # the tiny model's tokenizer gives about 3 characters per token on agent prompts (5200 are
  # ~1800 tokens of its 4096 positions), and longer prompts slow the CPU run.
  c.agent.max_prompt_chars = 0 if full else 5200
  for name, new_tokens, temp in (("memory_sampling", 512 if full else 24, 0.7),
                                 ("action_sampling", 256 if full else 16, 0.7)):
    s = ml_collections.ConfigDict()
    s.temperature = temp  # sampling temperature (0 = greedy)
    s.top_p = 1.0  # nucleus sampling mass
    s.top_k = -1  # top-k (-1 = off)
    s.max_new_tokens = new_tokens  # completion length cap
    s.stop = ()  # stop strings
    c.agent[name] = s

  backend = a["backend"] or ("sglang" if full else "local")
  c.llm = default_llm_config(backend)  # the base model's endpoint (see automem.llm.config)
  if backend == "local":
    # Small engine batches: dense attention over 4096-token prompts costs B x 256 MB per
    # layer on CPU; all live episodes' requests still go out in one generate call.
    c.llm.local.max_batch_size = 2
  c.specialist_llm = default_llm_config("sglang")  # second endpoint when specialist_endpoint
  return c
