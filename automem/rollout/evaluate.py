"""The evaluation job: build envs, structures, clients and agents from a config; run; summarize.

`evaluate(config, workdir)` is what `experiments/evaluate.py` calls; a test
or a notebook can call it too. Re-running on the same workdir resumes.
Input errors (an unknown game, task or seed set, a bad structure file, an
unwritable workdir, a count out of range) are `InputError`s naming the field
or file, raised before anything is started.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
from collections.abc import Mapping
from typing import Any

import ml_collections
from absl import logging

from automem.agent import AgentConfig, SamplingConfig
from automem.envs import available_games
from automem.llm import LLMServerUnavailable, make_client
from automem.memory import MemoryStructure, StructureError, resolve_structure
from automem.rollout.rundir import RunDir, episode_id
from automem.rollout.runner import EpisodePlan, GameSetup, OutagePolicy, Runner
from automem.rollout.seeds import SEED_SETS, seeds
from automem.utils.errors import InputError, RunStopped


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
    raise InputError("config.games", "is empty")
  for g in games:
    if g not in config.game:
      raise InputError("config.games", f"names {g!r}, which has no config.game.{g} section; "
                       f"known: {', '.join(config.game.keys())}")
    if g not in available_games():
      raise InputError("config.games", f"unknown game {g!r}; known: {', '.join(available_games())}")
  return games


def _registered_ids(game: str) -> set[str]:
  import gymnasium
  import nle  # noqa: F401 -- registers the NetHack tasks
  if game == "minihack":
    import minihack  # noqa: F401 -- registers the MiniHack tasks
  return set(gymnasium.registry)


def check_tasks(game: str, tasks: tuple[str, ...], where: str) -> None:
  """Refuses task ids the game does not have (before any env is built)."""
  if game in ("crafter", "crafter_original"):
    bad = [t for t in tasks if t != game]
    if bad:
      raise InputError(where, f"{game} has no tasks (use ()), got {bad}")
    return
  if game not in ("minihack", "nethack") or not tasks:
    return
  from automem.envs.minihack import resolve_task

  ids = _registered_ids(game)
  for t in tasks:
    full = resolve_task(t) if game == "minihack" else t
    prefix = "MiniHack-" if game == "minihack" else "NetHack"
    if full not in ids or not full.startswith(prefix):
      known = sorted(i for i in ids if i.startswith(prefix))
      raise InputError(where, f"unknown {game} task {t!r}; known: {', '.join(known[:12])}"
                       + (", ..." if len(known) > 12 else ""))


def task_universe(game: str) -> list[str]:
  """Every task id a structure's per-task override could meet for `game` (full and short
  MiniHack ids, NetHack ids, or the game's own name for Crafter)."""
  if game not in ("minihack", "nethack"):
    return [game]
  prefix = "MiniHack-" if game == "minihack" else "NetHack"
  ids = sorted(i for i in _registered_ids(game) if i.startswith(prefix))
  if game == "minihack":
    ids += [i.removeprefix(prefix).removesuffix("-v0") for i in ids]
  return ids


def check_overrides(game: str, structure: MemoryStructure, where: str) -> None:
  """Refuses a per-task override whose glob matches no task the game has (a typo would
  otherwise leave the override silently unused)."""
  universe = task_universe(game)
  for i, o in enumerate(structure.task_overrides):
    if not any(fnmatch.fnmatchcase(t, o.match) for t in universe):
      raise InputError(where, f"task_overrides[{i}].match: {o.match!r} matches no {game} task "
                       f"(e.g. {', '.join(universe[:3])})")


def _positive(value: Any, where: str, *, allow: tuple[int, ...] = ()) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or (value < 1 and value not in allow):
    extra = f" (or {', '.join(map(str, allow))})" if allow else ""
    raise InputError(where, f"must be a whole number >= 1{extra}, got {value!r}")


def validate_config(config: ml_collections.ConfigDict) -> list[str]:
  """Checks every field `evaluate` uses; returns the games. Raises `InputError`."""
  games = game_list(config)
  if config.seed_set not in SEED_SETS:
    raise InputError("config.seed_set", f"unknown seed set {config.seed_set!r}; known: "
                     f"{', '.join(SEED_SETS)}")
  if not isinstance(config.seed_offset, int) or config.seed_offset < 0:
    raise InputError("config.seed_offset", f"must be >= 0, got {config.seed_offset!r}")
  _positive(config.episodes_per_task, "config.episodes_per_task")
  if config.outage_wait_s < 0:
    raise InputError("config.outage_wait_s", f"must be >= 0, got {config.outage_wait_s}")
  for g in games:
    gc = config.game[g]
    _positive(gc.episodes, f"config.game.{g}.episodes", allow=(-1,))
    _positive(gc.max_steps, f"config.game.{g}.max_steps")
    _positive(gc.envs_per_task, f"config.game.{g}.envs_per_task")
    check_tasks(g, tuple(gc.tasks), f"config.game.{g}.tasks")
    structure = build_structure(g, gc)  # a bad structure file or override is reported here
    check_overrides(g, structure, f"config.game.{g}.structure")
    try:
      seeds(config.seed_set, gc.episodes if gc.episodes > 0 else config.episodes_per_task,
            config.seed_offset)
    except ValueError as e:
      raise InputError(f"config.game.{g}.episodes", str(e)) from None
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
  """The game's structure (v0, a shipped variant such as "evolved", or a JSON file), with the
  config's overrides as a revision."""
  try:
    structure = resolve_structure(game, gcfg.structure)
  except (OSError, ValueError, StructureError) as e:
    raise InputError(f"config.game.{game}.structure", f"{gcfg.structure}: {e}") from None
  overrides = _flatten(_plain(gcfg.structure_overrides))
  if overrides:
    try:
      structure = structure.revise(overrides, note=f"evaluation config overrides: {overrides}")
    except (ValueError, StructureError) as e:
      raise InputError(f"config.game.{game}.structure_overrides", str(e)) from None
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


def open_run_dir(workdir: str) -> RunDir:
  """The run directory, created; `InputError` naming --workdir when it cannot be written."""
  try:
    run_dir = RunDir(workdir)
    probe = run_dir.path(f".write-test.tmp{os.getpid()}")  # swept if we are killed
    with open(probe, "w", encoding="utf-8"):
      pass
    os.unlink(probe)
  except OSError as e:
    raise InputError("--workdir", f"{workdir} is not a writable directory: {e}") from None
  return run_dir


def _check_structures(run_dir: RunDir, structures: Mapping[str, MemoryStructure]) -> None:
  """A resumed run must play with the structures it started with (else results would mix)."""
  for game, s in structures.items():
    path = run_dir.path("structures", f"{game}.json")
    if os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        saved = json.load(f)
      if saved != s.to_dict():
        raise InputError("--workdir", f"{run_dir.root} was started with a different {game} "
                         f"structure ({path}); use a new --workdir or the same structure")


def evaluate(config: ml_collections.ConfigDict, workdir: str, *,
             env_factory: Any = None, clients: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Plays the configured episodes into `workdir` and returns the run summary.

  Args:
    config: an `experiments/configs/evaluate.py` config.
    workdir: the run directory (created; an existing one is resumed).
    env_factory: a `make_env`-like factory instead of `automem.envs.make_env`.
    clients: role -> LLM client instead of the ones `config.llm` describes.
  """
  games = validate_config(config)
  backend = config.get("backend", "inprocess")
  if backend not in ("inprocess", "ray"):
    raise InputError("config.backend", f"must be 'inprocess' or 'ray', got {backend!r}")
  if clients is None:
    check_model_fits(config)
  structures = {g: build_structure(g, config.game[g]) for g in games}
  run_dir = open_run_dir(workdir)
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
  if backend == "ray":
    return _run_on_ray(config, run_dir, setups, plans, env_factory, clients)
  return asyncio.run(_run(config, run_dir, setups, plans, env_factory, clients))


def _run_on_ray(config, run_dir, setups, plans, env_factory, clients) -> dict[str, Any]:
  """`config.backend == "ray"`: the episodes spread over a Ray cluster (rollout.ray_backend)."""
  from automem.rollout.ray_backend import run_on_ray

  if env_factory is not None or clients is not None:
    raise ValueError("the ray backend builds envs and clients on its workers from the config; "
                     "env_factory= and clients= work only with backend='inprocess'")
  specialist = config.agent.two_model and config.agent.specialist_endpoint
  return run_on_ray(run_dir, setups, plans, agent_config(config), llm=_plain(config.llm),
                    specialist_llm=_plain(config.specialist_llm) if specialist else None,
                    ray_config=config.ray, header_extra={"llm_backend": config.llm.backend},
                    keep_errored=config.keep_errored,
                    outage=OutagePolicy(wait_s=config.outage_wait_s))


# Characters per token of the tiny model's tokenizer: 2.7-3.5 measured on agent prompts; 1.4, its
# low end on text unlike its corpus, keeps the check safe.
_TINY_CHARS_PER_TOKEN = 1.4


def check_model_fits(config: ml_collections.ConfigDict, where: str = "config") -> None:
  """Refuses a run whose prompts cannot fit the tiny offline model's context.

  Without a prompt cap (`agent.max_prompt_chars`, as in `evaluate.py:full`) the prompts grow to
  8-16k tokens; the tiny model's engine would fail every request and the run would be a
  string of engine errors. A real checkpoint or server is the user's to size. `where` is the
  evaluation config's path in the job's config (the error names its flags under it).
  """
  if config.llm.backend != "local" or config.llm.local.checkpoint:
    return
  context = int(config.llm.local.tiny_context)
  cap = int(_TINY_CHARS_PER_TOKEN * (context - max(config.agent.memory_sampling.max_new_tokens,
                                                    config.agent.action_sampling.max_new_tokens)))
  limit = int(config.agent.max_prompt_chars)
  if limit <= 0 or limit > cap:
    raise InputError(
        f"{where}.agent.max_prompt_chars",
        f"the tiny offline model holds {context} tokens (about {cap} prompt characters), but "
        f"agent.max_prompt_chars={limit} lets prompts grow past that (the `full` config's "
        "prompts need 8-16k tokens), so every episode would end with an engine error. Serve a "
        f"real model (--{where}.llm.backend=sglang --{where}.llm.base_url=...), give a local "
        f"checkpoint with a long context (--{where}.llm.local.checkpoint=DIR), or cap the "
        f"prompts (--{where}.agent.max_prompt_chars={min(cap, 5200)}).")


def start_job(config: ml_collections.ConfigDict, eval_config: ml_collections.ConfigDict,
              workdir: str | None, name: str, where: str = "config.eval") -> str:
  """The common start of a job that evaluates (Loop 1, Loop 2, the pipeline): bad input as
  one line before the config dump (`validate_config`, `check_model_fits`), the config
  logged, the compile cache for the local engine. Returns the workdir (default
  `runs/<name>-<UTC timestamp>`)."""
  import platform
  import time

  from automem.models.tiny import local_compile_cache

  workdir = workdir or os.path.join("runs", time.strftime(f"{name}-%Y%m%d-%H%M%S", time.gmtime()))
  validate_config(eval_config)
  check_model_fits(eval_config, where)
  logging.info("python %s on %s; workdir %s", platform.python_version(), platform.node(), workdir)
  logging.info("config:\n%s", config)
  if eval_config.llm.backend == "local":
    local_compile_cache()
  return workdir


async def _run(config, run_dir, setups, plans, env_factory, clients) -> dict[str, Any]:
  own = clients is None
  if own:
    clients = {"base": make_client(config.llm)}
    if config.agent.two_model and config.agent.specialist_endpoint:
      clients["specialist"] = make_client(config.specialist_llm)
  kwargs = {"env_factory": env_factory} if env_factory is not None else {}
  runner = Runner(run_dir, setups, plans, clients, agent_config(config),
                  progress=config.progress, header_extra={"llm_backend": config.llm.backend},
                  keep_errored=config.keep_errored,
                  outage=OutagePolicy(wait_s=config.outage_wait_s), **kwargs)
  try:
    return await runner.arun()
  except LLMServerUnavailable as e:  # down at start-up: nothing was played
    raise RunStopped(" ".join(str(e).split())) from None
  finally:
    if own:
      for c in {id(c): c for c in clients.values()}.values():
        await c.close()
