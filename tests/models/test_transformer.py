"""Model semantics: packing, KV cache, remat, bf16, sharding on 8 simulated devices."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding

from automem.models import (
  KVCache,
  ModelConfig,
  default_positions,
  load_hf_checkpoint,
  make_mesh,
  shard_model,
)
from tests.support.models import forward


@pytest.fixture(scope="module")
def qwen3(hf_qwen3_dir):
  return load_hf_checkpoint(hf_qwen3_dir)


def _rows(vocab, lengths, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.integers(0, vocab, n).astype(np.int32) for n in lengths]


def test_packed_row_equals_separate_rows(qwen3):
  a, b = _rows(qwen3.config.vocab_size, [5, 6])
  packed = np.concatenate([a, b, np.zeros(1, np.int32)])[None]  # one padding slot at the end
  seg = np.array([[1] * 5 + [2] * 6 + [0]], np.int32)
  pos = np.asarray(default_positions(jnp.asarray(seg)))
  assert pos.tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 0]]
  logits = forward(qwen3, packed, pos, seg)
  for row, sl in ((a, slice(0, 5)), (b, slice(5, 11))):
    n = len(row)
    ref = forward(qwen3, row[None], np.arange(n)[None], np.ones((1, n), np.int32))
    np.testing.assert_allclose(logits[0, sl], ref[0], rtol=1e-5, atol=1e-5)


def test_cache_decode_equals_full_forward(qwen3):
  (row,) = _rows(qwen3.config.vocab_size, [9], seed=1)
  full = forward(qwen3, row[None], np.arange(9)[None], np.ones((1, 9), np.int32))
  # Left-padded prefill of 6 tokens (2 pads), then 3 single-token decode steps.
  toks = np.concatenate([[0, 0], row[:6]])[None].astype(np.int32)
  seg = np.array([[0, 0] + [1] * 6], np.int32)
  pos = np.array([[0, 0, 0, 1, 2, 3, 4, 5]], np.int32)
  step_fn = nnx.jit(lambda m, t, p, s, c: m(t, p, s, c))
  cache = KVCache.init(qwen3.config, 1, 16)
  logits, cache = step_fn(qwen3, toks, pos, seg, cache)
  np.testing.assert_allclose(logits[0, 2:], full[0, :6], rtol=1e-5, atol=1e-5)
  for t in range(6, 9):
    step, cache = step_fn(qwen3, row[None, t : t + 1], np.array([[t]]), np.ones((1, 1), np.int32),
                          cache)
    np.testing.assert_allclose(step[0, 0], full[0, t], rtol=1e-5, atol=1e-5)
  assert int(cache.index) == 11


def test_query_chunked_attention_is_exact(qwen3):
  toks, = _rows(qwen3.config.vocab_size, [12], seed=4)
  toks = np.stack([toks, toks[::-1]])
  seg = np.array([[0] * 2 + [1] * 10, [1] * 5 + [2] * 7], np.int32)
  pos = np.asarray(default_positions(jnp.asarray(seg)))
  chunked = nnx.clone(qwen3)
  for layer in chunked.layers:
    layer.self_attn.config = qwen3.config.replace(attention_chunk=4)
  np.testing.assert_allclose(np.asarray(forward(chunked, toks, pos, seg)),
                             np.asarray(forward(qwen3, toks, pos, seg)), rtol=1e-5, atol=1e-6)


def _loss(model, toks, pos, seg):
  logits, _ = model(toks, pos, seg)
  return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, toks[..., None], -1)[..., 0])


def test_remat_and_bf16(hf_qwen2_dir):
  toks = jnp.asarray(_rows(1024, [8, 8], seed=2))
  pos = jnp.broadcast_to(jnp.arange(8), (2, 8))
  seg = jnp.ones((2, 8), jnp.int32)
  plain = load_hf_checkpoint(hf_qwen2_dir)
  remat = load_hf_checkpoint(hf_qwen2_dir, remat=True)
  grad = nnx.jit(nnx.grad(_loss))
  g1 = grad(plain, toks, pos, seg)
  g2 = grad(remat, toks, pos, seg)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  bf16 = load_hf_checkpoint(hf_qwen2_dir, dtype="bfloat16")
  assert bf16.layers[0].mlp.up_proj.kernel.dtype == jnp.float32  # fp32 master weights
  lo16 = forward(bf16, toks, pos, seg)
  lo32 = forward(plain, toks, pos, seg)
  assert lo16.dtype == jnp.float32
  assert np.max(np.abs(lo16 - lo32)) < 0.05 * np.max(np.abs(lo32))


def test_config_validation():
  with pytest.raises(ValueError, match="multiple of num_kv_heads"):
    ModelConfig(num_heads=4, num_kv_heads=3)
  with pytest.raises(ValueError, match="unsupported model_type"):
    ModelConfig.from_hf_dict({"model_type": "llama"})


def test_sharded_forward_equals_unsharded(hf_qwen2_dir, qwen3):
  """qwen2 loaded straight onto (fsdp=4, tensor=2); qwen3 resharded onto (2, 2, 2)."""
  assert jax.device_count() >= 8
  toks = np.stack(_rows(1024, [12] * 4, seed=3))
  seg = np.ones_like(toks)
  seg[0, :3] = 0
  pos = np.asarray(default_positions(jnp.asarray(seg)))
  q2_ref = load_hf_checkpoint(hf_qwen2_dir)
  q2 = load_hf_checkpoint(hf_qwen2_dir, mesh=make_mesh(1, 4, 2))
  kernel = q2.layers[0].mlp.gate_proj.kernel.get_value()
  assert isinstance(kernel.sharding, NamedSharding)
  assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
  assert len(kernel.addressable_shards) == 8
  q3 = shard_model(nnx.clone(qwen3), make_mesh(2, 2, 2))
  assert q3.layers[0].self_attn.o_proj.kernel.get_value().sharding.spec == (
      jax.sharding.PartitionSpec("tensor", "fsdp"))
  for model, ref_model, ambient in ((q2, q2_ref, False), (q3, qwen3, True)):
    mesh = model.layers[0].mlp.gate_proj.kernel.get_value().sharding.mesh
    batch = NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
    args = [jax.device_put(x, batch) for x in (toks, pos, seg)]
    if ambient:  # activation constraints are active under an ambient mesh
      with jax.set_mesh(mesh):
        out = forward(model, *args)
      assert out.sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp"), None, "tensor")
    else:
      out = forward(model, *args)
    ref = forward(ref_model, toks, pos, seg)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=1e-5)
