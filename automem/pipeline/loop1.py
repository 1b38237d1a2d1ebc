"""The loop1 stage: Loop 1 (`automem.structure.optimize_structure`) once per game.

Each game's loop runs in `<workdir>/loop1/<game>/` (its lineage.jsonl,
revisions/vK.json, evals/ ...) with the pipeline's `loop1` section and the
pipeline's evaluation config, on selection seeds. Loop 1 resumes by itself
(finished episodes and saved proposals are read back), so a pipeline killed
inside this stage picks up where it stopped. The stage returns the incumbent
structure of every game that accepted a revision; the final stage plays those
on the evaluation seeds beside v0.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections

from automem.pipeline.stages import Context, clients_of, eval_games


def loop1_config(config: ml_collections.ConfigDict, game: str) -> ml_collections.ConfigDict:
  """The optimize_structure config of `game` from the pipeline config."""
  c = config.loop1.copy_and_resolve_references()
  with c.unlocked():
    del c["games"]
    c.game = game
    if c.race.test == "auto":
      c.race.test = "sign" if game == "minihack" else "bootstrap"
    if c.race.metric == "auto":
      c.race.metric = "dense" if game == "nethack" else "progression"
    e = config.eval.copy_and_resolve_references()
    e.seed_set = "selection"  # the loop sets it per evaluation; it refuses anything else
    e.progress = False
    c.eval = e
  return c


def loop1_games(config: ml_collections.ConfigDict) -> list[str]:
  """The games Loop 1 optimises: `loop1.games`, else every evaluated game."""
  games = eval_games(config)
  chosen = [g.strip() for g in config.loop1.games.replace(";", ",").split(",") if g.strip()]
  for g in chosen:
    if g not in games:
      raise ValueError(f"loop1.games names {g!r}, which eval.games ({config.eval.games!r}) "
                       f"does not play")
  return chosen or games


def incumbent_structure(workdir: str, label: str) -> str:
  """The structure file of Loop 1's version `label`: `structures/<loop id>.json`, which
  `revisions/<label>.json` names (that file adds the loop id, so it is not a structure file)."""
  with open(os.path.join(workdir, "revisions", f"{label}.json"), encoding="utf-8") as f:
    loop_id = json.load(f).get("loop_id", label)
  path = os.path.join(workdir, "structures", f"{loop_id}.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Loop 1 version {label} in {workdir}: no structure file {path}")
  return path


def loop1_stage(ctx: Context) -> dict[str, Any]:
  """Runs (or resumes) Loop 1 for each game; returns {structures, incumbents, accepted, runs}."""
  from automem.structure import optimize_structure

  root = ctx.stage_dir("loop1")
  clients = clients_of(ctx)
  structures, incumbents, accepted, runs, episodes = {}, {}, {}, {}, 0
  for game in loop1_games(ctx.config):
    workdir = os.path.join(root, game)
    summary = optimize_structure(loop1_config(ctx.config, game), workdir, clients=clients,
                                 env_factory=ctx.env_factory)
    label = summary["incumbent"] or "v0"
    incumbents[game], accepted[game], runs[game] = label, summary["accepted"], workdir
    episodes += summary["episodes"]
    if label != "v0":
      structures[game] = incumbent_structure(workdir, label)
  return {"structures": structures, "incumbents": incumbents, "accepted": accepted,
          "runs": runs, "episodes": episodes}
