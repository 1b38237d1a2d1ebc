"""Pipeline stages in one workdir: v0, loop1, loop2, final, report.

Each stage owns `<workdir>/<stage>/` and is done when its summary,
`<workdir>/<stage>/stage_summary.json`, exists; a rerun skips done stages and
resumes the others (evaluation runs resume episode by episode). A stage can be
skipped, or fed from an artifact instead of being run: a structure file for
Loop 1, an adapter directory for Loop 2. Loop 1 and Loop 2 are pluggable
callables (`set_loop`): Loop 1 is `automem.pipeline.loop1` (one
`optimize_structure` run per game), Loop 2 `automem.pipeline.loop2` (one
`improve_proficiency` run for one game).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections
from absl import logging

STAGES = ("v0", "loop1", "loop2", "final", "report")
SUMMARY = "stage_summary.json"


@dataclasses.dataclass
class Context:
  """What a stage sees: the workdir, the config and the summaries of the stages before it."""

  workdir: str
  config: ml_collections.ConfigDict
  results: dict[str, dict[str, Any]]
  # Injected LLM clients, or a callable giving fresh ones per evaluation (tests); None = the
  # clients the config describes.
  clients: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None
  env_factory: Callable[..., Any] | None = None  # injected env factory (tests), else make_env

  def stage_dir(self, name: str) -> str:
    path = os.path.join(self.workdir, name)
    os.makedirs(path, exist_ok=True)
    return path


StageFn = Callable[[Context], dict[str, Any]]


def _loop1(ctx: Context) -> dict[str, Any]:
  from automem.pipeline.loop1 import loop1_stage

  return loop1_stage(ctx)


def _loop2(ctx: Context) -> dict[str, Any]:
  from automem.pipeline.loop2 import loop2_stage

  return loop2_stage(ctx)


_LOOPS: dict[str, StageFn] = {"loop1": _loop1, "loop2": _loop2}


def set_loop(name: str, fn: StageFn) -> None:
  """Plugs Loop 1 or Loop 2 in: `fn(ctx) -> summary` (see `loop_stage` for the summary's keys)."""
  if name not in _LOOPS:
    raise ValueError(f"unknown loop stage {name!r}; expected loop1 or loop2")
  _LOOPS[name] = fn


def eval_games(config: ml_collections.ConfigDict) -> list[str]:
  """The games the pipeline evaluates (`eval.games`)."""
  return [g.strip() for g in config.eval.games.split(",") if g.strip()]


def clients_of(ctx: Context) -> Mapping[str, Any] | None:
  """The injected clients (fresh ones when a factory was injected), or None (the config's)."""
  return ctx.clients() if callable(ctx.clients) else ctx.clients


def _eval_config(ctx: Context, *, structures: Mapping[str, str] | None = None,
                 adapter: str = "") -> ml_collections.ConfigDict:
  config = ctx.config.eval.copy_and_resolve_references()
  with config.unlocked():
    for game, path in (structures or {}).items():
      if game in config.game:
        config.game[game].structure = path
        config.game[game].structure_overrides = ml_collections.ConfigDict()
    if adapter:
      config.agent.two_model = True
      config.agent.specialist_adapter = "memory"
      if config.llm.backend == "local":
        config.llm.local.adapters = f"memory={adapter}"
  return config


def _evaluate(ctx: Context, config: ml_collections.ConfigDict, run_dir: str) -> dict[str, Any]:
  from automem.rollout import evaluate

  summary = evaluate(config, run_dir, clients=clients_of(ctx), env_factory=ctx.env_factory)
  return {"run_dir": run_dir, "summary": summary,
          "structures": {g: os.path.join(run_dir, "structures", f"{g}.json")
                         for g in summary.get("games", {})}}


def v0_stage(ctx: Context) -> dict[str, Any]:
  """The starting agent (v0 structures) on the evaluation seeds."""
  return _evaluate(ctx, _eval_config(ctx), ctx.stage_dir("v0"))


def _artifact_map(spec: str, games: Sequence[str]) -> dict[str, str]:
  """"path" (every game) or "game=path;game=path" -> {game: absolute path}."""
  if "=" not in spec:
    return {g: os.path.abspath(spec) for g in games}
  out = {}
  for part in filter(None, spec.replace(",", ";").split(";")):
    game, _, path = part.partition("=")
    out[game.strip()] = os.path.abspath(path.strip())
  return out


def loop_stage(name: str) -> StageFn:
  """Loop 1 / Loop 2: the plugged-in callable, or the configured artifact.

  Summary keys the final stage reads: `structures` ({game: structure JSON}) from
  loop1, `adapter` (a PEFT adapter directory) from loop2.
  """
  def run(ctx: Context) -> dict[str, Any]:
    if name == "loop1" and ctx.config.artifacts.structure:
      paths = _artifact_map(ctx.config.artifacts.structure, eval_games(ctx.config))
      for p in paths.values():
        if not os.path.isfile(p):
          raise FileNotFoundError(f"loop1 artifact: no structure file {p}")
      return {"source": "artifact", "structures": paths}
    if name == "loop2" and ctx.config.artifacts.adapter:
      path = os.path.abspath(ctx.config.artifacts.adapter)
      if not os.path.isdir(path):
        raise FileNotFoundError(f"loop2 artifact: no adapter directory {path}")
      return {"source": "artifact", "adapter": path}
    return {"source": "loop", **_LOOPS[name](ctx)}
  return run


def final_stage(ctx: Context) -> dict[str, Any]:
  """Every version beyond v0 on the evaluation seeds, one run dir each under final/."""
  root = ctx.stage_dir("final")
  versions: dict[str, ml_collections.ConfigDict] = {}
  structures = (ctx.results.get("loop1") or {}).get("structures") or {}
  loop2 = ctx.results.get("loop2") or {}
  adapter = loop2.get("adapter") or ""
  if structures:
    versions["v1"] = _eval_config(ctx, structures=structures)
  if adapter:
    cfg = _eval_config(ctx, structures=structures, adapter=adapter)
    if loop2.get("game"):  # the specialist was trained for one game: evaluate it there
      with cfg.unlocked():
        cfg.games = loop2["game"]
    versions["v1+train" if structures else "v0+train"] = cfg
  runs = {label: _evaluate(ctx, cfg, os.path.join(root, label)) for label, cfg in versions.items()}
  return {"versions": ["v0", *runs], "runs": {k: v["run_dir"] for k, v in runs.items()}}


def report_stage(ctx: Context) -> dict[str, Any]:
  """The report of v0 and the final versions (and the viewer of each run when configured)."""
  from automem.report import build_report, find_versions

  out = ctx.stage_dir("report")
  versions = find_versions(ctx.workdir)
  report = build_report(versions, out, seed_set=ctx.config.report.seed_set,
                        search_roots=(ctx.workdir,))
  viewers = {}
  if ctx.config.report.viewer:
    from automem.viewer import export_run

    for v in versions:
      viewers[v.label] = export_run(v.run_dir, os.path.join(out, "viewer", v.label))
  return {"report": os.path.join(out, "report.html"), "viewers": viewers,
          "table": report["table"]}


DEFAULT_STAGES: dict[str, StageFn] = {
    "v0": v0_stage, "loop1": loop_stage("loop1"), "loop2": loop_stage("loop2"),
    "final": final_stage, "report": report_stage,
}


def summary_path(workdir: str, stage: str) -> str:
  return os.path.join(workdir, stage, SUMMARY)


def read_summary(workdir: str, stage: str) -> dict[str, Any] | None:
  path = summary_path(workdir, stage)
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _write_summary(workdir: str, stage: str, summary: Mapping[str, Any]) -> None:
  path = summary_path(workdir, stage)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=2, sort_keys=True, default=str)
  os.replace(tmp, path)


def stage_plan(config: ml_collections.ConfigDict) -> tuple[list[str], set[str]]:
  """The stages to run in order and the ones to skip; unknown names are a ValueError."""
  order = [s.strip() for s in config.stages.split(",") if s.strip()]
  skip = {s.strip() for s in config.skip.split(",") if s.strip()}
  for name in [*order, *skip]:
    if name not in STAGES:
      raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
  if len(set(order)) != len(order):
    raise ValueError(f"a stage is listed twice in {config.stages!r}")
  return order, skip


def run_pipeline(config: ml_collections.ConfigDict, workdir: str, *,
                 stages: Mapping[str, StageFn] | None = None,
                 clients: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None,
                 env_factory: Callable[..., Any] | None = None) -> dict[str, dict[str, Any]]:
  """Runs the configured stages in order; returns each stage's summary.

  A stage with a summary on disk is not run again; a skipped stage gets the
  summary `{"skipped": true}` (not written, so a later run may still run it).
  """
  stages = {**DEFAULT_STAGES, **(stages or {})}
  order, skip = stage_plan(config)
  os.makedirs(workdir, exist_ok=True)
  ctx = Context(os.path.abspath(workdir), config, {}, clients, env_factory)
  for name in order:
    done = read_summary(ctx.workdir, name)
    if done is not None:
      logging.info("stage %s: done (%s)", name, summary_path(ctx.workdir, name))
      ctx.results[name] = done
      continue
    if name in skip:
      logging.info("stage %s: skipped", name)
      ctx.results[name] = {"skipped": True}
      continue
    logging.info("stage %s: running", name)
    start = time.time()
    summary = {"stage": name, **stages[name](ctx), "wall_s": time.time() - start}
    _write_summary(ctx.workdir, name, summary)
    ctx.results[name] = summary
  return ctx.results
