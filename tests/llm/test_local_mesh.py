"""The local engine on a device mesh (`llm.local.mesh`): 8 simulated CPU devices (tests/conftest).

The tiny model has 4 heads and 2 KV heads, so tensor=2 splits heads, MLP, vocabulary and the
KV slots in two; fsdp=2 also splits the embedding dimension. Greedy completions (base and a
LoRA adapter on the shared base, fresh prompts and a prompt continuing a slot's KV) must be
token-identical to the one-device engine's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shlex
import subprocess

import numpy as np
import pytest
from flax import nnx

from automem.llm import LLMRequest, default_llm_config, make_client
from automem.llm.local import load_local_engine
from automem.models import (
    GenerationEngine,
    LoraConfig,
    SamplingParams,
    Tokenizer,
    apply_lora,
    export_lora_adapter,
    load_hf_checkpoint,
    make_mesh,
    save_hf_checkpoint,
)
from automem.models import generate as gen_lib
from automem.models.sharding import parse_mesh_spec
from automem.utils.errors import InputError
from tests.llm.conftest import PROMPT_BUCKET

pytestmark = pytest.mark.timeout(300)

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=12)
SPECIALIST = dataclasses.replace(GREEDY, adapter="specialist")
SAMPLED = dataclasses.replace(GREEDY, temperature=0.7, seed=3)  # over vocab-split logits
# What make_client passes for the config below (so every engine here runs the same shapes).
ENGINE_KW = dict(max_batch_size=4, min_prompt_bucket=PROMPT_BUCKET, decode_chunk=8,
                 max_seq_len=None, seed=0, prefix_cache=True, num_slots=4)


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint, tmp_path_factory) -> str:
  """The tiny checkpoint with every weight perturbed: its greedy completions vary from token
  to token (the 0.02-scale random init repeats one token), so a changed logit would show."""
  model = load_hf_checkpoint(tiny_checkpoint)
  rng = np.random.default_rng(0)
  for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    x = np.asarray(v.get_value())
    v.set_value(x + rng.normal(0, 0.2, x.shape).astype(np.float32))
  path = str(tmp_path_factory.mktemp("mesh_tiny"))
  save_hf_checkpoint(model, path)
  Tokenizer.from_pretrained(tiny_checkpoint).save(path)
  return path


@pytest.fixture(scope="module")
def lora_model(checkpoint):
  """A LoRA model on the tiny base whose adapter changes the greedy tokens."""
  tuned = load_hf_checkpoint(checkpoint)
  apply_lora(tuned, LoraConfig(rank=2, alpha=4.0, targets=("q_proj", "up_proj")), seed=1)
  rng = np.random.default_rng(0)
  for layer in tuned.layers:
    for lin in (layer.self_attn.q_proj, layer.mlp.up_proj):
      lin.lora.lora_b.set_value(rng.normal(0, 3.0, lin.lora.lora_b.shape).astype(np.float32))
  return tuned


@pytest.fixture(scope="module")
def adapter_dir(lora_model, tmp_path_factory) -> str:
  path = str(tmp_path_factory.mktemp("mesh_adapter"))
  export_lora_adapter(lora_model, path)
  return path


def play(engine, tok) -> list[list[int]]:
  """Base (greedy and seeded sampling) and adapter prompts, then the two base prompts again,
  continued (their KV comes from their slots)."""
  prompts = [tok.encode("You see a tree and two stones. Plan:"),
             tok.encode("Write a note about the water."), tok.encode("Inventory: wood")]
  first = engine.generate(prompts, [GREEDY, SPECIALIST, SAMPLED])
  traces = gen_lib.TRACE_COUNTS["prefill"]
  follow = [prompts[i] + first[i].token_ids + tok.encode(" Next:") for i in (0, 2)]
  again = engine.generate(follow, [GREEDY, SAMPLED])
  assert engine.num_prefill_tokens < engine.num_prompt_tokens  # the prefixes were reused
  # Same shapes as the first base batch: the sharded KV store kept its sharding (no retrace).
  assert gen_lib.TRACE_COUNTS["prefill"] == traces
  return [o.token_ids for o in first + again]


@pytest.fixture(scope="module")
def reference(checkpoint, adapter_dir):
  engine, tok = load_local_engine(checkpoint, adapters={"specialist": adapter_dir},
                                  **ENGINE_KW)
  assert engine.mesh is None
  ids = play(engine, tok)
  assert all(len(set(x)) > 3 for x in ids), ids  # varied tokens, not one repeated
  return engine, tok, ids


def shard_shape(x) -> tuple[int, ...]:
  return tuple(x.sharding.shard_shape(x.shape))


def test_tensor_parallel_client_matches_one_device(checkpoint, adapter_dir, reference):
  ref_engine, tok, ref_ids = reference
  config = default_llm_config("local")
  config.local.checkpoint = checkpoint
  config.local.mesh = "tensor=2"
  config.local.adapters = f"specialist={adapter_dir}"
  config.local.max_batch_size = ENGINE_KW["max_batch_size"]
  config.local.min_prompt_bucket = PROMPT_BUCKET
  config.local.decode_chunk = ENGINE_KW["decode_chunk"]
  config.local.num_slots = ENGINE_KW["num_slots"]
  client = make_client(config)
  messages = [{"role": "user", "content": "Where is the water?"}]

  async def main():
    async with client:
      return (await client.generate([LLMRequest(messages=messages, max_new_tokens=12,
                                                temperature=0.0)]))[0]

  result = asyncio.run(main())
  engine = client.engine
  assert dict(engine.mesh.shape) == {"data": 1, "fsdp": 1, "tensor": 2}
  want = ref_engine.generate([tok.apply_chat_template(messages)], GREEDY)[0]
  assert result.ok and result.text == want.text
  assert play(engine, tok) == ref_ids
  # Tensor parallel: q heads and MLP columns split in two, the KV slots by KV head.
  attn = engine.state["layers"][0]["self_attn"]
  assert shard_shape(attn["q_proj"]["kernel"].get_value()) == (64, 32)
  assert shard_shape(engine.state["layers"][0]["mlp"]["down_proj"]["kernel"].get_value()) == (
      64, 64)
  assert shard_shape(engine.state["embed_tokens"].get_value()) == (512, 64)
  store_k = engine._store[0][0]
  assert store_k.shape[2] == 2 and shard_shape(store_k)[2] == 1
  assert len(store_k.sharding.device_set) == 2
  # The adapter's B matrix follows its layer's output split; the base is shared, not copied.
  spec = engine.adapters["specialist"][1]["layers"][0]["self_attn"]["q_proj"]
  assert shard_shape(spec["lora"]["lora_b"].get_value()) == (2, 32)
  assert spec["kernel"].get_value() is attn["q_proj"]["kernel"].get_value()


def test_fsdp_and_tensor_engine_matches_one_device(checkpoint, lora_model, reference):
  _, tok, ref_ids = reference
  engine, _ = load_local_engine(checkpoint, mesh="fsdp=2,tensor=2", **ENGINE_KW)
  engine.add_adapter("specialist", lora_model)  # a live LoRA model, as Loop 2 hands over
  assert play(engine, tok) == ref_ids
  kernel = engine.state["layers"][1]["self_attn"]["q_proj"]["kernel"].get_value()
  assert shard_shape(kernel) == (32, 32) and len(kernel.sharding.device_set) == 4
  lora_a = engine.adapters["specialist"][1]["layers"][1]["self_attn"]["q_proj"]["lora"]["lora_a"]
  assert shard_shape(lora_a.get_value()) == (32, 2)


@pytest.mark.parametrize("spec, message", [
    ("tensor=4", "tensor=4 does not divide the model's 2 KV heads"),
    ("tensor=16", "needs 16 devices, have 8"),
    ("fsdp=3,tensor=-1", "8 devices are not divisible by 3"),
    ("model=2", "is not AXIS=SIZE"),
    ("tensor=two", "is not an integer"),
    ("tensor=0", "positive integer or -1"),
    ("tensor=2,tensor=2", "given twice"),
])
def test_bad_mesh_values_name_the_field(tiny_checkpoint, spec, message):
  config = default_llm_config("local")
  config.local.checkpoint = tiny_checkpoint
  config.local.mesh = spec
  with pytest.raises(InputError, match=r"^llm\.local\.mesh: ") as e:
    make_client(config)
  assert message in str(e.value) and "\n" not in str(e.value)


def test_mesh_spec_and_engine_checks(tiny_model, tiny_tokenizer):
  assert parse_mesh_spec("") is None
  assert parse_mesh_spec(" fsdp=2 , tensor=-1 ") == {"data": 1, "fsdp": 2, "tensor": -1}
  with pytest.raises(ValueError, match="does not divide"):
    GenerationEngine(tiny_model, tiny_tokenizer, mesh=make_mesh(1, 1, 4))


def test_tpu_launcher_serves_on_every_chip_of_the_host():
  def remote(**env) -> list[str]:
    env = {"PATH": "/usr/bin:/bin", "DRY_RUN": "1", "CKPT": "/ck", "TPU_NAME": "t", "ZONE": "z",
           **env}
    out = subprocess.run(["bash", "launch/tpu_pod_automem.sh",
                          "experiments/configs/automem.py:paper", "/w"], env=env,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return shlex.split(shlex.split(out)[-1])  # the command run on worker 0

  args = remote()
  assert "--config.eval.llm.local.mesh=tensor=-1" in args and args[-1] == "--workdir=/w"
  assert "--config.eval.llm.local.mesh=fsdp=2,tensor=4" in remote(MESH="fsdp=2,tensor=4")
  assert "--config.eval.llm.local.mesh=" in remote(MESH="")


def test_mesh_on_a_directory_without_a_checkpoint_names_the_field(tmp_path):
  from automem.llm.local import local_engine_mesh

  with pytest.raises(ValueError, match=r"^llm\.local\.checkpoint: .*no config\.json"):
    local_engine_mesh(str(tmp_path), "tensor=2")
