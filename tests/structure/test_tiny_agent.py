"""The whole loop on CPU with the tiny local agent and the offline proposer, then resumed.

The engine is the rollout tests' (`rollout_engine`: batch 2, one 2048-token
prompt bucket), so this adds no compile to the suite; compact system texts
keep every prompt inside that bucket.
"""

from __future__ import annotations

import json
import pathlib

import pytest

from automem.structure import optimize_structure
from tests.rollout.conftest import rollout_engine  # noqa: F401 -- the shared engine fixture
from tests.rollout.test_evaluate_e2e import LOG_SYSTEM, PLAN_SYSTEM, CountingClient, local_client
from tests.structure.conftest import loop_config

pytestmark = pytest.mark.slow


def test_loop_with_the_tiny_agent_and_offline_proposer(tmp_path, rollout_engine):  # noqa: F811
  config = loop_config(rounds=1, **{"race.stages": (1,), "race.confirm_seeds": 0,
                                    "review.episodes": 0, "final.episodes": 0})
  g = config.eval.game.minihack
  g.tasks, g.max_steps, g.envs_per_task = ("MiniHack-Corridor-R3-v0",), 2, 1
  g.structure_overrides = {"log": {"max_iterations": 1, "system": LOG_SYSTEM},
                           "plan": {"max_iterations": 1, "system": PLAN_SYSTEM}}
  for s in (config.eval.agent.memory_sampling, config.eval.agent.action_sampling):
    s.max_new_tokens = 8
  config.eval.agent.max_prompt_chars = 3000
  workdir = tmp_path / "loop"
  client = CountingClient(local_client(rollout_engine))
  summary = optimize_structure(config, str(workdir), clients={"base": client})
  (rec,) = [json.loads(x) for x in (workdir / "lineage.jsonl").read_text().splitlines()]
  assert rec["proposer"] == "offline" and rec["changes"] != "(no changes)"
  assert rec["decision"] in ("accepted", "rejected_test", "rejected_confirm", "dropped")
  assert set(rec["per_seed"]["incumbent"]) == set(rec["per_seed"]["candidate"])
  assert len(rec["per_seed"]["candidate"]) == 1
  proposals = json.loads((workdir / "rounds" / "r0" / "proposals.json").read_text())
  assert proposals[0]["changes"] == rec["proposal"]["changes"]
  trajectories = sorted(pathlib.Path(workdir).glob("evals/**/trajectories/*.jsonl"))
  ends = [json.loads(p.read_text().splitlines()[-1]) for p in trajectories]
  assert ends and all(e["type"] == "end" for e in ends)
  assert sum(e["metrics"]["llm_calls"] for e in ends) > 0  # the tiny model really played
  assert "final" not in summary
  # Again on the same workdir: nothing is played or asked again.
  calls = len(client.calls)
  again = optimize_structure(config, str(workdir), clients={"base": client})
  assert len(client.calls) == calls and again["accepted"] == summary["accepted"]
