"""The evaluation job: build envs, structures, clients and agents from a config; run; summarize.

`evaluate(config, workdir)` is what `experiments/evaluate.py` calls; a test
or a notebook can call it too. Re-running on the same workdir resumes.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from typing import Any

import ml_collections
from absl import logging

from automem.agent import AgentConfig, SamplingConfig
from automem.llm import make_client
from automem.memory import MemoryStructure, load_structure
from automem.rollout.rundir import RunDir, episode_id
from automem.rollout.runner import EpisodePlan, GameSetup, Runner
from automem.rollout.seeds import seeds


def _plain(value: Any) -> Any:
  if isinstance(value, ml_collections.ConfigDict):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, Mapping):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, list | tuple):
    return [_plain(v) for v in value]
  return value


def game_list(config: ml_collections.ConfigDict) -> list[str]:
  games = [g.strip() for g in str(config.games).split(",") if g.strip()]
  if not games:
    raise ValueError("config.games is empty")
  for g in games:
    if g not in config.game:
      raise ValueError(f"config.games names {g!r}, which has no config.game.{g} section; "
                       f"known: {', '.join(config.game.keys())}")
  return games


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  out: dict[str, Any] = {}
  for key, value in tree.items():
    path = f"{prefix}.{key}" if prefix else str(key)
    if isinstance(value, Mapping) and value:
      out.update(_flatten(value, path))
    else:
      out[path] = value
  return out


def build_structure(game: str, gcfg: ml_collections.ConfigDict) -> MemoryStructure:
  """The game's structure: v0 or a file, with the config's overrides as a revision."""
  structure = MemoryStructure.load(gcfg.structure) if gcfg.structure else load_structure(game)
  overrides = _flatten(_plain(gcfg.structure_overrides))
  if overrides:
    structure = structure.revise(overrides, note=f"evaluation config overrides: {overrides}")
  return structure


def build_plans(config: ml_collections.ConfigDict) -> list[EpisodePlan]:
  """Every episode of the run: per game and task, seeds from the named seed set."""
  plans = []
  for game in game_list(config):
    g = config.game[game]
    n = g.episodes if g.episodes > 0 else config.episodes_per_task
    for task in (tuple(g.tasks) or (game,)):
      for seed in seeds(config.seed_set, n, config.seed_offset):
        plans.append(EpisodePlan(episode_id(game, task, seed), game, task, seed, config.seed_set))
  return plans


def agent_config(config: ml_collections.ConfigDict) -> AgentConfig:
  a = config.agent

  def sampling(s: ml_collections.ConfigDict) -> SamplingConfig:
    return SamplingConfig(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
                          max_new_tokens=s.max_new_tokens, stop=tuple(s.stop))

  return AgentConfig(layout=a.layout, two_model=a.two_model,
                     specialist_adapter=a.specialist_adapter or None,
                     memory_sampling=sampling(a.memory_sampling),
                     action_sampling=sampling(a.action_sampling), seed=a.seed,
                     max_prompt_chars=a.max_prompt_chars)


def _check_structures(run_dir: RunDir, structures: Mapping[str, MemoryStructure]) -> None:
  """A resumed run must play with the structures it started with (else results would mix)."""
  for game, s in structures.items():
    path = run_dir.path("structures", f"{game}.json")
    if os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        saved = json.load(f)
      if saved != s.to_dict():
        raise ValueError(f"{run_dir.root} was started with a different {game} structure "
                         f"({path}); use a new --workdir or the same structure")


def evaluate(config: ml_collections.ConfigDict, workdir: str, *,
             env_factory: Any = None, clients: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Plays the configured episodes into `workdir` and returns the run summary.

  Args:
    config: an `experiments/configs/evaluate.py` config.
    workdir: the run directory (created; an existing one is resumed).
    env_factory: a `make_env`-like factory instead of `automem.envs.make_env`.
    clients: role -> LLM client instead of the ones `config.llm` describes.
  """
  run_dir = RunDir(workdir)
  games = game_list(config)
  structures = {g: build_structure(g, config.game[g]) for g in games}
  _check_structures(run_dir, structures)
  run_dir.write_config(_plain(config))
  for g, s in structures.items():
    run_dir.write_structure(g, s.to_dict())
  setups = {}
  for g in games:
    gc = config.game[g]
    kwargs = {"max_steps": gc.max_steps, **_plain(gc.env_kwargs)}
    setups[g] = GameSetup(g, structures[g], kwargs, gc.envs_per_task)
  plans = build_plans(config)
  logging.info("evaluation: %d episodes of %s into %s", len(plans), ", ".join(games), run_dir.root)
  return asyncio.run(_run(config, run_dir, setups, plans, env_factory, clients))


async def _run(config, run_dir, setups, plans, env_factory, clients) -> dict[str, Any]:
  own = clients is None
  if own:
    clients = {"base": make_client(config.llm)}
    if config.agent.two_model and config.agent.specialist_endpoint:
      clients["specialist"] = make_client(config.specialist_llm)
  kwargs = {"env_factory": env_factory} if env_factory is not None else {}
  runner = Runner(run_dir, setups, plans, clients, agent_config(config),
                  progress=config.progress, header_extra={"llm_backend": config.llm.backend},
                  **kwargs)
  try:
    return await runner.arun()
  finally:
    if own:
      for c in {id(c): c for c in clients.values()}.values():
        await c.close()
