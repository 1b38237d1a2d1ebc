"""Loop 2's small parts: recipes, the ledger after a kill, adapter names, Loop 1's best."""

from __future__ import annotations

import json

import ml_collections
import pytest

from automem.proficiency.deploy import adapter_name
from automem.proficiency.loop import ProficiencyLoop, append_ledger, loop1_best, read_ledger
from automem.proficiency.recipes import TARGETS, Recipe, recipe_grid, split_selectors, train_config
from automem.utils import InputError
from experiments.configs.improve_proficiency import get_config


def test_recipe_grid_is_the_product_with_stable_ids():
  grid = ml_collections.ConfigDict({"selectors": ("usage", "top_episodes/usage;requery"),
                                    "rank": (4, 8), "lr": (1e-4,)})
  recipes = recipe_grid(grid)
  assert len(recipes) == 4 and len({r.id for r in recipes}) == 4
  assert [r.id for r in recipe_grid(grid)] == [r.id for r in recipes]
  assert recipe_grid(grid, limit=3) == recipes[:3]
  assert split_selectors("top_episodes/usage;requery") == (("top_episodes",), ("usage", "requery"))
  with pytest.raises(ValueError, match="unknown recipe grid fields"):
    recipe_grid(ml_collections.ConfigDict({"ranks": (4,)}))
  with pytest.raises(ValueError, match="targets"):
    Recipe(targets="mlp_only")
  with pytest.raises(ValueError, match="no scorer"):
    Recipe(selectors="top_episodes/")


def test_train_config_sets_the_recipe_and_steps_from_epochs():
  base = get_config().train
  r = Recipe(rank=16, alpha=32.0, targets="attn", lr=5e-5, epochs=3.0)
  c = train_config(base, r, selection="/s.jsonl", base_model="/m", rows=10)
  per_step = c.batch.micro_batch * c.batch.accum_steps
  assert c.steps == -(-30 // per_step) and c.lora.rank == 16 and c.lora.alpha == 32.0
  assert tuple(c.lora.target_modules) == TARGETS["attn"] and c.optim.learning_rate == 5e-5
  assert c.data.selection == "/s.jsonl" and c.model.checkpoint == "/m" and c.finetune == "lora"
  assert base.lora.rank == 8 and base.data.selection == ""  # the base config is not changed


def test_ledger_drops_a_torn_write_and_an_unfinished_round(tmp_path):
  path = str(tmp_path / "ledger.jsonl")
  append_ledger(path, [{"round": 0, "recipe_id": "a"}, {"round": 0, "recipe_id": "b"}])
  append_ledger(path, [{"round": 1, "recipe_id": "a"}])  # a kill after one of two rows
  with open(path, "a") as f:
    f.write('{"round": 1, "reci')  # torn
  rows = read_ledger(path, per_round=2)
  assert [(r["round"], r["recipe_id"]) for r in rows] == [(0, "a"), (0, "b")]
  with open(path) as f:
    assert [json.loads(x) for x in f] == rows  # cut from the file: round 1 is decided again


def test_adapter_names_follow_the_weights(tmp_path):
  d = tmp_path / "adapter"
  d.mkdir()
  (d / "adapter_model.safetensors").write_bytes(b"one")
  first = adapter_name("k0-r", str(d))
  assert adapter_name("k0-r", str(d)) == first  # a resumed run serves the same name
  (d / "adapter_model.safetensors").write_bytes(b"two")
  assert adapter_name("k0-r", str(d)) != first  # new weights, a fresh name


def test_loop1_best_is_the_incumbent_revision(tmp_path):
  rev = tmp_path / "revisions"
  rev.mkdir()
  for v in ("v0", "v2", "v10"):
    (rev / f"{v}.json").write_text("{}")
  assert loop1_best(str(tmp_path)).endswith("v10.json")
  (tmp_path / "summary.json").write_text(json.dumps({"incumbent": "v2"}))
  assert loop1_best(str(tmp_path)).endswith("v2.json")
  with pytest.raises(FileNotFoundError):
    loop1_best(str(tmp_path / "nothing"))


@pytest.mark.parametrize("field, value, match", [
    ("halving.eta", 1, "config.halving.eta"),
    ("collect.episodes", 0, "config.collect.episodes"),
    ("deploy", "vllm", "config.deploy"),
    ("deploy", "sglang", "config.deploy"),  # the agent runs on the local engine
    ("structure", "/no/such.json", "config.structure"),
    ("grid.targets", ("mlp_only",), "config.grid"),
])
def test_bad_config_values_are_named(tmp_path, field, value, match):
  config = get_config()
  node, _, leaf = field.rpartition(".")
  (config[node] if node else config)[leaf] = value
  with pytest.raises(InputError, match=match):
    ProficiencyLoop(config, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()  # refused before anything is written


def test_sglang_host_survives_a_restarted_loop(tiny_tokenizer, tmp_path):
  """A resumed loop loads an adapter the server kept: no error; a second unload only warns."""
  from automem.llm import make_client
  from automem.models import SamplingParams
  from automem.proficiency.deploy import SGLangAdapters, make_host
  from tests.llm.test_http_backends import sglang_config
  from tests.support.llm_server import LLMTestServer

  loaded = []
  with LLMTestServer(None, tiny_tokenizer, SamplingParams, model_path="tiny",
                     adapter_loader=lambda path: loaded.append(path) or object()) as server:
    client = make_client(sglang_config(server.url))
    host = make_host("sglang", client)
    assert isinstance(host, SGLangAdapters)
    host.load("k0-a-123", str(tmp_path))
    host.load("k0-a-123", str(tmp_path))  # the server kept it from the killed run
    assert loaded == [str(tmp_path)] and set(server._loaded()) == {"k0-a-123"}
    host.unload("k0-a-123")
    host.unload("k0-a-123")
    assert server._loaded() == {}
    with pytest.raises(ValueError, match="cannot load LoRA adapters"):
      SGLangAdapters(object())
