"""Logits parity with transformers (PyTorch CPU, fp32) on tiny random Qwen2 and Qwen3."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from automem.models import (
    LoraConfig,
    apply_lora,
    export_lora_adapter,
    load_hf_checkpoint,
    save_hf_checkpoint,
)
from automem.models.checkpoint import CheckpointError
from tests.support.models import forward, torch_model

# Three rows: left-padded, right-padded, full (0 in `valid` = padding).
LENGTHS = [(3, 9), (0, 7), (0, 12)]  # (left pad, real tokens); width 12
WIDTH = 12


def _batch(vocab: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, vocab, (len(LENGTHS), WIDTH)).astype(np.int32)
  seg = np.zeros_like(tokens)
  for i, (pad, n) in enumerate(LENGTHS):
    seg[i, pad : pad + n] = 1
  pos = np.maximum(np.cumsum(seg, 1) - 1, 0).astype(np.int32)
  return tokens, pos, seg


def _torch_logits(model, tokens, pos, seg):
  with torch.no_grad():
    out = model(input_ids=torch.as_tensor(tokens, dtype=torch.long),
                attention_mask=torch.as_tensor(seg, dtype=torch.long),
                position_ids=torch.as_tensor(pos, dtype=torch.long))
  return out.logits.float().numpy()


def _ours(model, tokens, pos, seg):
  logits = forward(model, tokens, pos, seg)
  assert logits.dtype == np.float32
  return np.asarray(logits)


def assert_close(ours, ref, seg, rel=1e-4):
  mask = seg.astype(bool)
  a, b = ours[mask], ref[mask]
  err = np.max(np.abs(a - b)) / np.max(np.abs(b))
  assert err < rel, f"relative error {err:.2e}"


@pytest.mark.parametrize("family", ["qwen2", "qwen3"])
def test_logits_match_transformers(family, hf_qwen2_dir, hf_qwen3_dir):
  path = hf_qwen2_dir if family == "qwen2" else hf_qwen3_dir
  model = load_hf_checkpoint(path)
  assert model.config.family == family
  ref_model = torch_model(path)
  tokens, pos, seg = _batch(model.config.vocab_size)
  ref = _torch_logits(ref_model, tokens, pos, seg)
  assert_close(_ours(model, tokens, pos, seg), ref, seg)


def test_export_reloads_in_transformers(hf_qwen3_dir, tmp_path):
  model = load_hf_checkpoint(hf_qwen3_dir)
  save_hf_checkpoint(model, str(tmp_path), max_shard_bytes=100_000)  # forces several shards
  assert (tmp_path / "model.safetensors.index.json").exists()
  tokens, pos, seg = _batch(model.config.vocab_size, seed=1)
  ref = _torch_logits(torch_model(str(tmp_path)), tokens, pos, seg)
  assert_close(_ours(model, tokens, pos, seg), ref, seg)
  # And our own loader reads the sharded export back exactly.
  again = load_hf_checkpoint(str(tmp_path))
  np.testing.assert_array_equal(_ours(again, tokens, pos, seg), _ours(model, tokens, pos, seg))
  # bfloat16 safetensors load into fp32 master weights (rounded once).
  import ml_dtypes

  save_hf_checkpoint(model, str(tmp_path / "bf16"), dtype=ml_dtypes.bfloat16)
  b16 = load_hf_checkpoint(str(tmp_path / "bf16"))
  w, w16 = model.layers[1].mlp.down_proj.kernel[...], b16.layers[1].mlp.down_proj.kernel[...]
  assert w16.dtype == np.float32
  np.testing.assert_array_equal(
      np.asarray(w16), np.asarray(w).astype(ml_dtypes.bfloat16).astype(np.float32))


def test_lora_adapter_matches_peft(hf_qwen2_dir, tmp_path):
  import peft

  model = load_hf_checkpoint(hf_qwen2_dir)
  cfg = LoraConfig(rank=4, alpha=8.0, targets=("q_proj", "v_proj", "o_proj", "down_proj"))
  apply_lora(model, cfg, seed=3)
  # Nonzero B so the adapter changes the output.
  rng = np.random.default_rng(0)
  for lin in [model.layers[i].self_attn.q_proj for i in range(2)] + [
      model.layers[1].mlp.down_proj, model.layers[0].self_attn.v_proj]:
    b = lin.lora.lora_b
    b.set_value(rng.normal(0, 0.1, b.shape).astype(np.float32))
  tokens, pos, seg = _batch(model.config.vocab_size, seed=2)
  ours = _ours(model, tokens, pos, seg)
  export_lora_adapter(model, str(tmp_path / "adapter"))
  base = torch_model(hf_qwen2_dir)
  base_logits = _torch_logits(base, tokens, pos, seg)
  peft_model = peft.PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval()
  ref = _torch_logits(peft_model, tokens, pos, seg)
  assert np.max(np.abs(ref - base_logits)) > 1e-3  # the adapter matters
  assert_close(ours, ref, seg)


def test_missing_and_misshaped_tensors_are_reported(hf_qwen2_dir, tmp_path):
  import json
  import shutil

  from safetensors.numpy import load_file, save_file

  bad = tmp_path / "bad"
  shutil.copytree(hf_qwen2_dir, bad)
  tensors = load_file(str(bad / "model.safetensors"))
  del tensors["model.layers.1.mlp.up_proj.weight"]
  tensors["model.norm.weight"] = np.ones((3,), np.float32)
  save_file(tensors, str(bad / "model.safetensors"))
  with pytest.raises(CheckpointError) as e:
    load_hf_checkpoint(str(bad))
  msg = str(e.value)
  assert "missing tensor model.layers.1.mlp.up_proj.weight" in msg
  assert "model.norm.weight has shape (3,)" in msg
  cfg = json.loads((bad / "config.json").read_text())
  assert cfg["model_type"] == "qwen2"


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_shards_are_a_clear_error(hf_qwen2_dir, tmp_path, damage):
  import shutil

  bad = tmp_path / damage
  shutil.copytree(hf_qwen2_dir, bad)
  shard = bad / "model.safetensors"
  data = shard.read_bytes()
  shard.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\xff" * 64)
  with pytest.raises(CheckpointError, match=r"model\.safetensors"):
    load_hf_checkpoint(str(bad))


# Real model configs (from their config.json), checked structurally without any weights.
REAL_CONFIGS = {
    "Qwen2.5-7B": dict(model_type="qwen2", vocab_size=152064, hidden_size=3584,
                       intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                       num_key_value_heads=4, tie_word_embeddings=False, rope_theta=1e6),
    "Qwen3-8B": dict(model_type="qwen3", vocab_size=151936, hidden_size=4096,
                     intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, tie_word_embeddings=False,
                     rope_theta=1e6, attention_bias=False),
}


@pytest.mark.parametrize("name", sorted(REAL_CONFIGS))
def test_real_size_configs_have_transformers_tensor_names_and_shapes(name):
  import transformers
  from flax import nnx

  from automem.models import ModelConfig, Transformer
  from automem.models.checkpoint import hf_name

  d = REAL_CONFIGS[name]
  cfg = ModelConfig.from_hf_dict(d)
  abstract = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
  ours = {}
  for path, var in nnx.to_flat_state(nnx.state(abstract)):
    hf, transpose = hf_name(path)
    ours[hf] = tuple(var.shape[::-1]) if transpose else tuple(var.shape)
  hf_cfg = transformers.AutoConfig.for_model(**d)
  with torch.device("meta"):
    ref = transformers.AutoModelForCausalLM.from_config(hf_cfg)
  theirs = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
  if cfg.tie_word_embeddings:
    theirs.pop("lm_head.weight")
  assert ours == theirs
