"""LoRA: only adapters train, merge == adapted forward, PEFT round trip, dropout modes."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from automem.models import (
    LoraConfig,
    apply_lora,
    export_lora_adapter,
    load_hf_checkpoint,
    load_lora_adapter,
    merge_lora,
)
from automem.models.checkpoint import CheckpointError
from tests.support.models import forward

TOKS = np.arange(16, dtype=np.int32).reshape(2, 8) * 37 % 1000
POS = np.broadcast_to(np.arange(8, dtype=np.int32), (2, 8))
SEG = np.ones((2, 8), np.int32)


CFG = LoraConfig(rank=2, alpha=4.0, targets=("q_proj", "up_proj"))


@pytest.fixture()
def lora_model(tiny_checkpoint_dir):
  model = load_hf_checkpoint(tiny_checkpoint_dir)
  apply_lora(model, CFG, seed=1)
  rng = np.random.default_rng(0)
  for layer in model.layers:
    for lin in (layer.self_attn.q_proj, layer.mlp.up_proj):
      lin.lora.lora_b.set_value(rng.normal(0, 0.2, lin.lora.lora_b.shape).astype(np.float32))
  return model


def test_fresh_adapter_is_identity_and_config_checks(tiny_checkpoint_dir):
  model = load_hf_checkpoint(tiny_checkpoint_dir)
  base = np.asarray(forward(model, TOKS, POS, SEG))
  apply_lora(model, CFG, seed=0)  # same structure as `lora_model`: shares its compiled forward
  np.testing.assert_array_equal(np.asarray(forward(model, TOKS, POS, SEG)), base)
  with pytest.raises(ValueError, match="unknown LoRA targets"):
    LoraConfig(targets=("qkv",))
  with pytest.raises(ValueError, match="tied"):
    apply_lora(model, LoraConfig(targets=("lm_head",)))


def _loss(model):
  return jnp.mean(forward_raw(model) ** 2)


def forward_raw(model):
  return model(TOKS, POS, SEG)[0]


def test_only_adapters_get_gradients(lora_model):
  grads = nnx.jit(nnx.grad(_loss, argnums=nnx.DiffState(0, nnx.LoRAParam)))(lora_model)
  leaves = nnx.to_flat_state(grads)
  assert leaves and all("lora" in [str(p) for p in path] for path, _ in leaves)
  assert len(leaves) == 2 * 2 * 2  # 2 layers x 2 targets x (A, B)
  assert all(float(jnp.abs(v.get_value()).sum()) > 0 for _, v in leaves)


def test_merge_equals_adapter_and_peft_roundtrip(lora_model, tiny_checkpoint_dir, tmp_path):
  adapted = np.asarray(forward(lora_model, TOKS, POS, SEG))
  export_lora_adapter(lora_model, str(tmp_path))
  reloaded = load_lora_adapter(load_hf_checkpoint(tiny_checkpoint_dir), str(tmp_path))
  np.testing.assert_allclose(np.asarray(forward(reloaded, TOKS, POS, SEG)), adapted,
                             rtol=1e-6, atol=1e-6)
  merged = merge_lora(reloaded)
  assert merged.layers[0].self_attn.q_proj.lora is None
  np.testing.assert_allclose(np.asarray(forward(merged, TOKS, POS, SEG)), adapted,
                             rtol=1e-4, atol=1e-5)
  # A bad adapter is refused with every problem named, leaving the model without adapters.
  import json
  cfg = json.loads((tmp_path / "adapter_config.json").read_text())
  cfg["target_modules"] = ["q_proj", "up_proj", "down_proj"]
  (tmp_path / "adapter_config.json").write_text(json.dumps(cfg))
  fresh = load_hf_checkpoint(tiny_checkpoint_dir)
  with pytest.raises(CheckpointError, match=r"missing .*layers\.1\.mlp\.down_proj\.lora_A"):
    load_lora_adapter(fresh, str(tmp_path))
  assert fresh.layers[0].self_attn.q_proj.lora is None


def test_dropout_only_in_train_mode(tiny_checkpoint_dir):
  model = load_hf_checkpoint(tiny_checkpoint_dir)
  apply_lora(model, LoraConfig(rank=2, dropout=0.5, targets=("v_proj",)), seed=0)
  for layer in model.layers:
    b = layer.self_attn.v_proj.lora.lora_b
    b.set_value(jnp.ones(b.shape) * 0.1)
  eval1 = forward_raw(model)
  assert np.array_equal(np.asarray(eval1), np.asarray(forward_raw(model)))
  model.train()
  train1, train2 = forward_raw(model), forward_raw(model)
  assert not np.allclose(np.asarray(train1), np.asarray(train2))
  model.eval()
  np.testing.assert_array_equal(np.asarray(forward_raw(model)), np.asarray(eval1))
