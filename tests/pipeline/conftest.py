"""A small real pipeline run (v0, a Loop 1 structure artifact as v1, final, report), killed and
resumed on the way, shared by the pipeline, report, viewer and notebook tests; the tiny engine
of the rollout tests (one compiled shape)."""

from __future__ import annotations

import os

import pytest

from automem.memory import load_structure
from automem.pipeline import read_summary, run_pipeline, summary_path
from experiments.configs.automem import get_config
from tests.rollout.conftest import rollout_engine  # noqa: F401  (the shared engine fixture)
from tests.rollout.test_evaluate_e2e import KillAfter, local_client, small_config


def pipeline_config(workdir: str, arg: str = "games=crafter,episodes=2,steps=3"):
  """The tiny pipeline on Crafter with the rollout tests' compact prompts; v1 = a structure
  whose LOG phase has one turn less, given to the pipeline as Loop 1's artifact."""
  config = get_config(arg)
  config.eval = small_config(arg)
  config.eval.game.crafter.structure_overrides.log.max_iterations = 2
  overrides = config.eval.game.crafter.structure_overrides
  v1 = load_structure("crafter").revise(
      {"log.system": overrides.log.system, "log.max_iterations": 1,
       "plan.system": overrides.plan.system, "game_rules": "(left out)"},
      "test revision: one LOG turn")
  path = os.path.join(workdir, "v1_crafter.json")
  os.makedirs(workdir, exist_ok=True)
  v1.save(path)
  config.skip = "loop2"
  config.artifacts.structure = path
  return config


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory, rollout_engine):  # noqa: F811
  """The pipeline killed inside v0, resumed and killed between stages, then resumed to the end.

  Returns (workdir, config, results, trace): `trace` holds what the kills left behind.
  """
  workdir = str(tmp_path_factory.mktemp("pipeline"))
  config = pipeline_config(workdir)
  clients = lambda: {"base": local_client(rollout_engine)}  # noqa: E731
  trace = {}
  with pytest.raises(KeyboardInterrupt):  # killed at v0's second env step
    run_pipeline(config, workdir, clients=clients, env_factory=KillAfter(2))
  trace["v0_summary_after_kill"] = read_summary(workdir, "v0")
  trace["partial_trajectories"] = sorted(os.listdir(os.path.join(workdir, "v0", "trajectories")))

  def broken(ctx):
    raise RuntimeError("killed before final")

  with pytest.raises(RuntimeError, match="killed before final"):
    run_pipeline(config, workdir, clients=clients, stages={"final": broken})
  trace["v0_summary_mtime"] = os.path.getmtime(summary_path(workdir, "v0"))
  trace["loop1_summary_mtime"] = os.path.getmtime(summary_path(workdir, "loop1"))
  trace["final_summary_after_break"] = read_summary(workdir, "final")
  results = run_pipeline(config, workdir, clients=clients)
  return workdir, config, results, trace
