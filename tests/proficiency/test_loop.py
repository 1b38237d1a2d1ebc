"""Loop 2 end to end on CPU with the tiny local agent: collect, select, train, deploy, race, test.

The agent's engine is the rollout tests' (`rollout_engine`: batch 2, one 2048-token prompt
bucket, the session's tiny model), so its compiled shapes are shared; adapters are trained on
that same checkpoint and served on its base weights, first in process (the local engine's
adapters), then through the SGLang-protocol test server's /load_lora_adapter.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import pytest

from automem.agent.trajectory import read_trajectories
from automem.llm import make_client
from automem.proficiency import deploy
from automem.proficiency.loop import ProficiencyLoop, TrainingStopped, improve_proficiency
from automem.rollout.seeds import seed_set_of
from automem.structure.arms import SeedDisciplineError
from experiments.configs.improve_proficiency import get_config
from tests.llm.test_http_backends import sglang_config
from tests.rollout.conftest import rollout_engine  # noqa: F401 -- the shared engine fixture
from tests.rollout.test_evaluate_e2e import LOG_SYSTEM, PLAN_SYSTEM, CountingClient, local_client
from tests.support.llm_server import LLMTestServer

pytestmark = pytest.mark.slow


def loop_config(base_model: str, **over):
  c = get_config("game=minihack")
  g = c.eval.game.minihack
  g.tasks, g.max_steps, g.envs_per_task = ("MiniHack-Corridor-R3-v0",), 2, 2
  g.structure_overrides = {"log": {"max_iterations": 1, "system": LOG_SYSTEM},
                           "plan": {"max_iterations": 1, "system": PLAN_SYSTEM}}
  for s in (c.eval.agent.memory_sampling, c.eval.agent.action_sampling):
    s.max_new_tokens = 8
  c.eval.agent.max_prompt_chars = 3000
  c.collect.episodes = 2
  c.collect.synthetic_episodes = 3
  c.grid.rank = (4,)
  c.grid.lr = (3e-3, 1e-3)  # two recipes, the same shapes (one compile)
  c.grid.epochs = (2.0,)
  c.halving.rungs = (1,)
  c.race.stages = (1,)
  c.race.confirm_seeds = 0
  c.final.episodes = 1
  c.train.model.checkpoint = base_model
  c.train.checkpoint.every = 2
  c.train.mesh.data, c.train.mesh.fsdp, c.train.mesh.tensor = 1, 2, 1  # of the 8 CPU devices
  c.train.batch.micro_batch, c.train.batch.eval_batch = 2, 2
  c.train.checkpoint.async_save = False
  for k, v in over.items():
    node, _, leaf = k.rpartition(".")
    (c[node] if node else c)[leaf] = v
  return c


class KillAfter(CountingClient):
  """A client that dies (as a killed process would) after `n` generate calls."""

  def __init__(self, client, n: int):
    super().__init__(client)
    self.n = n

  async def generate(self, requests):
    if len(self.calls) >= self.n:
      raise KeyboardInterrupt("killed")
    return await super().generate(requests)


def _seed_sets(root: pathlib.Path) -> set[str]:
  """The seed sets of every episode played under `root`."""
  dirs = [str(d) for d in root.glob("**/trajectories")]
  return {seed_set_of(t.header.seed) for t in read_trajectories(dirs)}


def test_loop_trains_deploys_races_and_resumes_after_kills(tmp_path, rollout_engine,  # noqa: F811
                                                           tiny_checkpoint_dir):
  config = loop_config(tiny_checkpoint_dir)
  workdir = tmp_path / "loop2"
  client = CountingClient(local_client(rollout_engine))
  host = deploy.LocalAdapters(client)
  # Kill 1: the first training job stops after one step (a preemption).
  with pytest.raises(TrainingStopped):
    improve_proficiency(config, str(workdir), clients={"base": client}, host=host,
                        stop_training_after=1)
  assert list(workdir.glob("rounds/k0/recipes/*/train/checkpoints/1"))
  assert not (workdir / "ledger.jsonl").exists()
  # Kill 2: the agent dies part-way through the selection-seed evaluations.
  killer = KillAfter(client.client, len(client.calls) + 6)
  with pytest.raises(KeyboardInterrupt):
    improve_proficiency(config, str(workdir), clients={"base": killer},
                        host=deploy.LocalAdapters(killer))
  assert not (workdir / "ledger.jsonl").exists()
  assert "test" not in _seed_sets(workdir)  # nothing reached the test seeds before the end
  # The resumed run finishes.
  summary = improve_proficiency(config, str(workdir), clients={"base": client}, host=host)
  rows = [json.loads(x) for x in (workdir / "ledger.jsonl").read_text().splitlines()]
  assert len(rows) == 2 and {r["recipe"]["lr"] for r in rows} == {3e-3, 1e-3}
  for r in rows:
    assert r["examples"] > 0 and r["train"]["steps"] >= 1 and r["train"]["loss"] > 0
    assert pathlib.Path(r["adapter"], "adapter_config.json").exists()
    assert r["per_seed"]["specialist"] and r["data_source"]["policy"] == "base"
    assert set(r["per_seed"]["specialist"]) == set(r["per_seed"]["base"])
  (pruned,) = [r for r in rows if not r["raced"]]
  (raced,) = [r for r in rows if r["raced"]]
  assert pruned["decision"] == "pruned_rung0"  # halving kept one of two
  assert raced["decision"] in ("accepted", "rejected_test", "dropped")
  assert len(raced["per_seed"]["specialist"]) == 2  # one rung seed + one race seed
  mem = raced["memory_commands"]
  assert mem["specialist"]["turns"] > 0 and mem["base"]["turns"] > 0
  # The specialist's memory turns really went to its adapter on the shared base.
  turns = [t for tr in read_trajectories(raced["run_dirs"]) for t in tr.turns if t.phase == "log"]
  assert turns and all(t.adapter == raced["adapter_name"] for t in turns)
  assert raced["adapter_name"].startswith("k0-" + raced["recipe_id"])
  # The final evaluation, once, on test seeds.
  final = summary["final"]
  assert final["recipe_id"] == summary["chosen"] and final["paired"]["n"] == 1
  assert _seed_sets(workdir / "evals" / "final") == {"test"}
  assert _seed_sets(workdir / "evals" / "k0") == {"train", "selection"}
  assert not rollout_engine[0].adapters  # unloaded at the end
  # Again: nothing is played, trained or selected again.
  calls = len(client.calls)
  again = improve_proficiency(config, str(workdir), clients={"base": client}, host=host)
  assert len(client.calls) == calls and again["chosen"] == summary["chosen"]
  # Test seeds are refused anywhere but the final evaluation.
  loop = ProficiencyLoop(config, str(workdir), clients={"base": client}, host=host)
  with pytest.raises(SeedDisciplineError):
    loop.play(None, "sneak", "test", 0, 1)
  with pytest.raises(ValueError, match=r"different config\.grid"):
    ProficiencyLoop(loop_config(tiny_checkpoint_dir, **{"grid.lr": (1e-2,)}), str(workdir),
                    clients={"base": client}, host=host)


@dataclasses.dataclass
class AdapterView:
  """The server's engine for one loaded adapter: the shared engine with `adapter` set."""

  engine: object
  name: str

  def generate(self, prompts, params):
    return self.engine.generate(prompts, [dataclasses.replace(p, adapter=self.name)
                                          for p in params])


def test_loop_deploys_through_the_servers_lora_endpoints(tmp_path, rollout_engine,  # noqa: F811
                                                         tiny_checkpoint_dir):
  engine, tok, params = rollout_engine

  def loader(path):  # what SGLang does with --enable-lora: the adapter on the shared base
    engine.add_adapter(path, path)
    return AdapterView(engine, path)

  config = loop_config(tiny_checkpoint_dir, **{"grid.lr": (3e-3,), "final.episodes": 0,
                                               "collect.episodes": 1, "deploy": "sglang",
                                               "rounds": 2})
  config.eval.llm = sglang_config("")
  with LLMTestServer(engine, tok, params, adapter_loader=loader, max_batch_size=2,
                     model_path="tiny") as server:
    config.eval.llm.base_url = server.url
    client = make_client(config.eval.llm)
    summary = improve_proficiency(config, str(tmp_path / "http"), clients={"base": client})
    rows = [json.loads(x) for x in (tmp_path / "http" / "ledger.jsonl").read_text()
            .splitlines()]
    assert [r["round"] for r in rows] == [0, 1]
    for row in rows:
      assert row["raced"] and row["per_seed"]["specialist"]
      turns = [t for tr in read_trajectories(row["run_dirs"]) for t in tr.turns
               if t.phase == "log"]
      assert turns and all(t.adapter == row["adapter_name"] and not t.error for t in turns)
    # Round 1 (expert iteration) collects on fresh train seeds with round 0's accepted
    # specialist, or with the base when none was accepted, and races on fresh seeds.
    assert rows[1]["data_source"]["policy"] == (
        rows[0]["recipe_id"] if rows[0]["decision"] == "accepted" else "base")
    assert rows[0]["adapter_name"] != rows[1]["adapter_name"]
    collected = [_seed_sets(pathlib.Path(r["data_source"]["run_dir"])) for r in rows]
    assert collected == [{"train"}, {"train"}]
    assert not set(rows[0]["per_seed"]["base"]) & set(rows[1]["per_seed"]["base"])
    assert server._loaded() == {}  # unloaded through /unload_lora_adapter at the end
    assert "final" not in summary
  for name in list(engine.adapters):
    engine.remove_adapter(name)
