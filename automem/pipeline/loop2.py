"""The loop2 stage: Loop 2 (`automem.proficiency.improve_proficiency`) on one game.

Loop 2 runs in `<workdir>/loop2/<game>/` (ledger.jsonl, rounds/, its run dirs)
with the pipeline's `loop2` section and the pipeline's evaluation config
restricted to that game, starting from Loop 1's structure for the game when
Loop 1 accepted one (else v0). Its own test-seed evaluation is off: the
pipeline's final stage plays the specialist on the evaluation seeds beside the
other versions. The stage returns the chosen specialist's adapter: an accepted
recipe, or with `loop2.report_unaccepted` the best raced one (marked
`accepted: False`), so a tiny run still shows a `+train` row. Loop 2 resumes by
itself, so a pipeline killed inside this stage picks up where it stopped.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections

from automem.pipeline.stages import Context, clients_of, eval_games


def loop2_game(config: ml_collections.ConfigDict) -> str:
  """The game Loop 2 trains a specialist for: `loop2.game`, else the first evaluated game."""
  games = eval_games(config)
  game = config.loop2.game or games[0]
  if game not in games:
    raise ValueError(f"loop2.game names {game!r}, which eval.games ({config.eval.games!r}) "
                     "does not play")
  return game


def loop2_config(config: ml_collections.ConfigDict, game: str,
                 structure: str = "") -> ml_collections.ConfigDict:
  """The improve_proficiency config from the pipeline config (its `loop2.proficiency`)."""
  c = config.loop2.proficiency.copy_and_resolve_references()
  with c.unlocked():
    c.game = game
    c.structure = structure
    c.structure_workdir = ""
    c.final.episodes = 0  # the pipeline's final stage plays the test seeds
    c.final.always = bool(config.loop2.report_unaccepted)
    c.select = config.loop2.selection.copy_and_resolve_references()  # each recipe sets
    # its own filters and scorers (grid.selectors); the rest of the selection settings here
    e = config.eval.copy_and_resolve_references()
    e.games = game
    e.progress = False
    c.eval = e
    c.deploy = "sglang" if e.llm.backend == "sglang" else "local"
  return c


def chosen_adapter(summary: dict[str, Any], workdir: str) -> tuple[str, bool]:
  """The chosen recipe's adapter directory (latest round) and whether it was accepted."""
  from automem.proficiency.loop import read_ledger

  chosen = summary.get("chosen")
  if not chosen:
    return "", False
  rows = [r for r in read_ledger(os.path.join(workdir, "ledger.jsonl"))
          if r["recipe_id"] == chosen and r.get("adapter")]
  if not rows:
    return "", False
  row = max(rows, key=lambda r: r["round"])
  return row["adapter"], row["decision"] == "accepted"


def loop2_stage(ctx: Context) -> dict[str, Any]:
  """Runs (or resumes) Loop 2; returns {game, adapter, accepted, ledger, chosen}."""
  from automem.proficiency import improve_proficiency

  game = loop2_game(ctx.config)
  structure = ((ctx.results.get("loop1") or {}).get("structures") or {}).get(game, "")
  workdir = os.path.join(ctx.stage_dir("loop2"), game)
  summary = improve_proficiency(loop2_config(ctx.config, game, structure), workdir,
                                clients=clients_of(ctx), env_factory=ctx.env_factory)
  adapter, accepted = chosen_adapter(summary, workdir)
  return {"game": game, "adapter": adapter, "accepted": accepted, "ledger": summary["ledger"],
          "chosen": summary.get("chosen"), "structure": structure or "v0"}
