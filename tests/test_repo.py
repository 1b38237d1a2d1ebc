"""Repository-level checks: CI runs the README's test command; every shipped config variant
builds into the objects its job runs with; every config field has a comment; the configs and
the library's dataclasses declare each default once (they agree)."""

import ast
import dataclasses
import importlib
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
  text = (ROOT / "README.md").read_text()
  return re.findall(r"```bash\n(.*?)\n```", text, flags=re.S)


def test_readme_opens_with_two_commands_and_ci_runs_the_test_one():
  commands = _readme_commands()
  assert len(commands) >= 2, "README must open with the main-job and the test command"
  test_command = commands[1].split("&&")[-1].strip()
  assert test_command.startswith("python -m pytest")
  ci = (ROOT / ".ci" / "run").read_text()
  assert test_command in ci, f"CI does not run the README's test command {test_command!r}"


CONFIG_FILES = sorted(
    p for p in (ROOT / "experiments" / "configs").glob("*.py") if "def get_config" in p.read_text()
)


def _build_evaluate(config):
  from automem.llm.config import retry_policy
  from automem.rollout.evaluate import agent_config, build_plans, build_structure, validate_config
  from automem.rollout.runner import GameSetup, OutagePolicy

  games = validate_config(config)
  setups = [GameSetup(g, build_structure(g, config.game[g]), dict(config.game[g].env_kwargs),
                      config.game[g].envs_per_task) for g in games]
  plans = build_plans(config)
  assert plans and len({p.episode_id for p in plans}) == len(plans)
  return [setups, plans, agent_config(config), OutagePolicy(wait_s=config.outage_wait_s),
          retry_policy(config.llm), retry_policy(config.specialist_llm)]


def _build_train_proficiency(config):
  import jax

  from automem.models import sharding as shd
  from automem.proficiency.run import dataset_config, optim_config
  from automem.proficiency.steps import make_optimizer

  mesh = shd.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
  assert mesh.size == jax.device_count()
  optim = optim_config(config)
  make_optimizer(optim)
  assert config.finetune in ("lora", "full") and config.export.kind in ("lora", "merged", "none")
  return [mesh, optim, dataset_config(config.data)]


def _build_select_decisions(config):
  from automem.credit.select import selection_config
  from automem.llm import make_client

  selection = selection_config(config.to_dict())
  clients = []
  if {"requery", "counterfactual"} & set(selection.scorers):
    clients.append(make_client(config.policy_llm))
  if "judge" in selection.scorers:
    clients.append(make_client(config.judge_llm))
  return [selection, *clients]


def _build_optimize_structure(config):
  from automem.rollout.evaluate import build_structure
  from automem.structure.loop import race_config, rules_of

  assert config.seed_set == "selection" and config.proposer.kind in (
      "offline", "reviewer", "single_shot")
  return [race_config(config.race), rules_of(config.rules),
          build_structure(config.game, config.eval.game[config.game]),
          *_build_evaluate(config.eval)]


def _build_automem(config):
  from automem.credit.select import selection_config
  from automem.pipeline import stage_plan
  from automem.pipeline.loop1 import loop1_config, loop1_games

  order, skip = stage_plan(config)
  assert order
  loop1 = [_build_optimize_structure(loop1_config(config, g)) for g in loop1_games(config)]
  return [*_build_evaluate(config.eval), order, skip, *loop1,
          selection_config(config.loop2.selection.to_dict())]


def _build_improve_proficiency(config):
  from automem.credit.select import selection_config
  from automem.proficiency.loop import check_config
  from automem.proficiency.recipes import recipe_grid, train_config
  from automem.structure.loop import race_config

  if not config.train.model.checkpoint:  # a served model's checkpoint is the user's to name
    config.train.model.checkpoint = "/ckpt/served-model"
  check_config(config)
  recipes = recipe_grid(config.grid, config.max_recipes)
  assert recipes and config.deploy in ("local", "sglang") and config.collect.episodes > 0
  trainer = train_config(config.train, recipes[0], selection="sel.jsonl", base_model="base",
                         rows=10)
  return [race_config(config.race), *recipes, selection_config(config.select.to_dict()),
          *_build_train_proficiency(trainer), *_build_evaluate(config.eval)]


BUILDERS = {"evaluate": _build_evaluate, "train_proficiency": _build_train_proficiency,
            "select_decisions": _build_select_decisions,
            "optimize_structure": _build_optimize_structure, "automem": _build_automem,
            "improve_proficiency": _build_improve_proficiency}


def _variants(path):
  module = importlib.import_module(f"experiments.configs.{path.stem}")
  return [(path.stem, v) for v in (None, *getattr(module, "VARIANTS", ()))]


@pytest.mark.parametrize("name, variant", [nv for p in CONFIG_FILES for nv in _variants(p)],
                         ids=lambda x: str(x))
def test_every_shipped_config_variant_builds_its_job_objects(name, variant, monkeypatch):
  # API-backed variants read their keys from the environment when the client is built.
  monkeypatch.setenv("OPENAI_API_KEY", "test-key")
  monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
  module = importlib.import_module(f"experiments.configs.{name}")
  config = module.get_config(variant)
  assert name in BUILDERS, f"add a builder for experiments/configs/{name}.py to this test"
  assert all(obj is not None for obj in BUILDERS[name](config))


# Sub-configs whose keys are free-form data (structure revisions, env keyword arguments).
FREE_FORM = {"structure_overrides", "env_kwargs"}
# Files whose assignments build the shipped configs (the llm section comes from the library).
CONFIG_SOURCES = [*CONFIG_FILES, ROOT / "automem" / "llm" / "config.py"]


def _commented_fields(path) -> tuple[set[str], list[str]]:
  """Attribute names assigned in `path`, and the assignments that lack a comment."""
  lines = path.read_text().splitlines()
  names, bare = set(), []
  for node in ast.walk(ast.parse(path.read_text())):
    if not isinstance(node, ast.Assign) or not isinstance(node.targets[0], ast.Attribute):
      continue
    names.add(node.targets[0].attr)
    value = node.value
    if (isinstance(value, ast.Call) and not value.args and not value.keywords
        and getattr(value.func, "attr", "") == "ConfigDict"):
      continue  # a section header; its fields carry the comments
    first, last = node.lineno - 1, node.end_lineno - 1
    around = lines[first:last + 1]
    before = lines[first - 1].strip() if first else ""
    after = lines[last + 1].strip() if last + 1 < len(lines) else ""
    if not (any("#" in x for x in around) or before.startswith("#") or after.startswith("# ^")):
      bare.append(f"{path.name}:{node.lineno}: {lines[first].strip()}")
  return names, bare


def _leaves(tree, prefix=""):
  for key, value in tree.items():
    if key in FREE_FORM:
      continue
    if isinstance(value, dict) and value:
      yield from _leaves(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}"


def test_every_config_field_has_a_comment():
  names, bare = set(), []
  for path in CONFIG_SOURCES:
    n, b = _commented_fields(path)
    names |= n
    bare += b
  assert not bare, "config assignments without a comment:\n" + "\n".join(bare)
  for path in CONFIG_FILES:
    module = importlib.import_module(f"experiments.configs.{path.stem}")
    missing = [leaf for leaf in _leaves(module.get_config().to_dict())
               if leaf.rsplit(".", 1)[-1] not in names]
    assert not missing, f"{path.name}: fields set without a commented assignment: {missing}"


def _agree(section, cls, *, skip=()):
  defaults = {f.name: f.default for f in dataclasses.fields(cls)
              if f.default is not dataclasses.MISSING}
  values = dict(section)
  shared = (set(defaults) & set(values)) - set(skip)
  assert shared, f"{cls.__name__}: nothing shared with the config section"
  diff = {k: (values[k], defaults[k]) for k in shared
          if (tuple(values[k]) if isinstance(values[k], list) else values[k]) != defaults[k]}
  assert not diff, f"{cls.__name__} defaults disagree with the config (config, library): {diff}"


def test_configs_and_library_dataclasses_declare_each_default_once():
  from automem.agent import AgentConfig, SamplingConfig
  from automem.llm.retry import RetryPolicy
  from automem.proficiency.dataset import DatasetConfig
  from automem.proficiency.steps import OptimConfig
  from automem.rollout.runner import OutagePolicy
  from experiments.configs import evaluate, train_proficiency

  train = train_proficiency.get_config().to_dict()
  # learning_rate depends on the model (tiny vs real) and row_length on the machine (CPU
  # rows of 256 tokens): the job picks them per variant, the library's are for real models.
  _agree(train["optim"], OptimConfig, skip=("learning_rate",))
  _agree(train["data"], DatasetConfig, skip=("row_length",))
  ev = evaluate.get_config("full").to_dict()
  _agree(ev["llm"] | {"max_retries": ev["llm"]["max_retries"]}, RetryPolicy)
  _agree({"wait_s": ev["outage_wait_s"]}, OutagePolicy)
  # max_prompt_chars: 0 (no cap) in `full`, the CPU default caps prompts for the tiny model;
  # seed: the job pins sampling seeds for reproducible runs, the library leaves them unset.
  _agree({k: v for k, v in ev["agent"].items() if k != "specialist_adapter"}, AgentConfig,
         skip=("max_prompt_chars", "seed", "memory_sampling", "action_sampling"))
  # max_new_tokens: the config's memory and action turns differ; the library has one default.
  _agree(ev["agent"]["memory_sampling"], SamplingConfig, skip=("max_new_tokens",))
  _agree(ev["agent"]["action_sampling"], SamplingConfig, skip=("max_new_tokens",))
  from automem.rollout.racing import RaceConfig
  from automem.structure.reviewer import Budget
  from automem.structure.rules import Rules
  from experiments.configs import optimize_structure

  loop1 = optimize_structure.get_config("full").to_dict()
  _agree(loop1["race"], RaceConfig)
  _agree(loop1["rules"], Rules)
  _agree(loop1["proposer"], Budget)
