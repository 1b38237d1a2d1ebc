"""Qwen2/2.5/Qwen3 decoder in Flax NNX.

Attention is defined by `positions` and `segment_ids` alone: a query attends to keys of the
same nonzero segment at positions <= its own. So one code path serves packed training
sequences, left- or right-padded batches, and KV-cache decode (where the cache keeps the
segment id and position of every slot it holds).

Module and attribute names follow the Hugging Face layout (`model.layers.N.self_attn.q_proj`)
so checkpoint names map one to one. Kernels are stored `[in, out]` (HF stores `[out, in]`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx, struct

from automem.models.config import ModelConfig
from automem.models.sharding import constrain

_ACT = ("batch", "activation_length", "activation_embed")

_INIT = nnx.initializers.normal(0.02)
_NEG_INF = -1e30


def param(
    init: Any, key: jax.Array | None, shape: tuple[int, ...], dtype: Any,
    axes: tuple[str | None, ...], cls: type[nnx.Variable] = nnx.Param,
) -> nnx.Variable:
  """A variable annotated with logical axis names (`out_sharding`), placed lazily.

  Eager sharding is off: logical names are resolved to mesh axes by `sharding.py` rules.
  """
  return cls(init(key, shape, dtype), out_sharding=axes, eager_sharding=False)


@jax.custom_vjp
def matmul(x: jax.Array, w: jax.Array) -> jax.Array:
  """`x @ w` (`x` [..., in], `w` [in, out]) whose weight gradient, a contraction over every
  token, reads a materialised input and output gradient on CPU.

  With plain autodiff XLA's CPU compiler fused the producers of both (the SiLU backward,
  residual sums, the RMSNorm) into the token-transposing copies feeding the weight-gradient
  dot, recomputing them while reading every input with a stride: about half of a LoRA step
  went there. An optimisation barrier keeps those copies plain transposes. Other backends
  get plain autodiff; the products are the same everywhere.
  """
  return jnp.dot(x, w)


def _matmul_fwd(x, w):
  return jnp.dot(x, w), (x, w)


def _matmul_bwd(res, g):
  x, w = res
  if jax.default_backend() == "cpu":
    x, g = jax.lax.optimization_barrier((x, g))
  batch = tuple(range(x.ndim - 1))
  dw = jax.lax.dot_general(x, g, ((batch, batch), ((), ())))
  return jnp.dot(g, w.T).astype(x.dtype), dw.astype(w.dtype)


matmul.defvjp(_matmul_fwd, _matmul_bwd)


class Linear(nnx.Module):
  """Dense layer with logical axis names and an optional LoRA adapter (see `lora.py`)."""

  def __init__(
      self, in_features: int, out_features: int, axes: tuple[str, str], *, use_bias: bool,
      dtype: Any, param_dtype: Any, rngs: nnx.Rngs,
  ):
    self.in_features = in_features
    self.out_features = out_features
    self.axes = axes
    self.dtype = dtype
    self.kernel = param(_INIT, rngs.params(), (in_features, out_features), param_dtype, axes)
    if use_bias:
      self.bias = param(nnx.initializers.zeros_init(), None, (out_features,), param_dtype,
                        (axes[1],))
    else:
      self.bias = None
    self.lora = nnx.data(None)  # a LoRAAdapter, set by `apply_lora`

  def __call__(self, x: jax.Array) -> jax.Array:
    y = matmul(x.astype(self.dtype), self.kernel[...].astype(self.dtype))
    if self.bias is not None:
      y = y + self.bias[...].astype(self.dtype)
    if self.lora is not None:
      y = y + self.lora(x).astype(y.dtype)
    return y


class RMSNorm(nnx.Module):

  def __init__(self, dim: int, eps: float, *, dtype: Any, param_dtype: Any):
    self.eps = eps
    self.dtype = dtype
    self.weight = param(nnx.initializers.ones_init(), None, (dim,), param_dtype, ("norm",))

  def __call__(self, x: jax.Array) -> jax.Array:
    xf = x.astype(jnp.float32)
    xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
    return self.weight[...].astype(self.dtype) * xf.astype(self.dtype)


def rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
  """Rotary embedding, HF "rotate_half" layout. x: [B, T, N, D], positions: [B, T]."""
  d = x.shape[-1]
  inv_freq = 1.0 / (theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
  freqs = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, D/2]
  emb = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]
  cos, sin = jnp.cos(emb).astype(x.dtype), jnp.sin(emb).astype(x.dtype)
  x1, x2 = x[..., : d // 2], x[..., d // 2 :]
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  return x * cos + rotated * sin


@struct.dataclass
class KVCache:
  """Per-layer keys/values plus the segment id and position of every cache slot.

  k[i], v[i]: [B, S, num_kv_heads, head_dim]; segment_ids, positions: [B, S] int32
  (segment 0 = empty slot); index: int32, the next slot to write: a scalar (same for all
  rows) or one per row `[B]` (rows of different lengths, as the generation engine keeps them).
  """

  k: tuple[jax.Array, ...]
  v: tuple[jax.Array, ...]
  segment_ids: jax.Array
  positions: jax.Array
  index: jax.Array

  @property
  def max_len(self) -> int:
    return self.segment_ids.shape[1]

  @classmethod
  def init(cls, config: ModelConfig, batch: int, max_len: int, dtype: Any = None) -> KVCache:
    dtype = config.dtype if dtype is None else dtype
    shape = (batch, max_len, config.num_kv_heads, config.head_dim)
    zeros = tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers))
    return cls(
        k=zeros,
        v=tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers)),
        segment_ids=jnp.zeros((batch, max_len), jnp.int32),
        positions=jnp.zeros((batch, max_len), jnp.int32),
        index=jnp.zeros((), jnp.int32),
    )


def write_at(buf: jax.Array, new: jax.Array, index: jax.Array) -> jax.Array:
  """`buf[b, index + j] = new[b, j]` for `buf` [B, S, ...] and `new` [B, T, ...].

  A scalar `index` writes every row at the same offset; a per-row `index` [B] writes each row
  at its own, and slots past the end of `buf` are dropped (padding beyond the cache).
  """
  new = new.astype(buf.dtype)
  if index.ndim == 0:
    return jax.lax.dynamic_update_slice(buf, new, (0, index) + (0,) * (buf.ndim - 2))
  b, t = new.shape[:2]
  cols = index[:, None] + jnp.arange(t, dtype=index.dtype)[None, :]
  return buf.at[jnp.arange(b)[:, None], cols].set(new, mode="drop")


def attention_mask(
    q_seg: jax.Array, q_pos: jax.Array, kv_seg: jax.Array, kv_pos: jax.Array
) -> jax.Array:
  """[B, T, S] bool: same nonzero segment and key position <= query position."""
  same = (q_seg[:, :, None] == kv_seg[:, None, :]) & (q_seg[:, :, None] != 0)
  return same & (kv_pos[:, None, :] <= q_pos[:, :, None])


class Attention(nnx.Module):

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    c = config
    self.config = c
    kw = dict(dtype=c.dtype, param_dtype=c.param_dtype, rngs=rngs)
    self.q_proj = Linear(c.hidden_size, c.num_heads * c.head_dim, ("embed", "heads"),
                         use_bias=c.attention_bias, **kw)
    self.k_proj = Linear(c.hidden_size, c.num_kv_heads * c.head_dim, ("embed", "kv_heads"),
                         use_bias=c.attention_bias, **kw)
    self.v_proj = Linear(c.hidden_size, c.num_kv_heads * c.head_dim, ("embed", "kv_heads"),
                         use_bias=c.attention_bias, **kw)
    self.o_proj = Linear(c.num_heads * c.head_dim, c.hidden_size, ("heads", "embed"),
                         use_bias=False, **kw)
    if c.qk_norm:
      self.q_norm = RMSNorm(c.head_dim, c.rms_norm_eps, dtype=c.dtype, param_dtype=c.param_dtype)
      self.k_norm = RMSNorm(c.head_dim, c.rms_norm_eps, dtype=c.dtype, param_dtype=c.param_dtype)
    else:
      self.q_norm = self.k_norm = None

  def __call__(
      self, x: jax.Array, positions: jax.Array, segment_ids: jax.Array,
      cache_kv: tuple[jax.Array, jax.Array] | None, kv_seg: jax.Array, kv_pos: jax.Array,
      index: jax.Array | None,
  ) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
    c = self.config
    b, t, _ = x.shape
    q = self.q_proj(x).reshape(b, t, c.num_heads, c.head_dim)
    k = self.k_proj(x).reshape(b, t, c.num_kv_heads, c.head_dim)
    v = self.v_proj(x).reshape(b, t, c.num_kv_heads, c.head_dim)
    if self.q_norm is not None:
      q, k = self.q_norm(q), self.k_norm(k)
    q = rope(q, positions, c.rope_theta)
    k = rope(k, positions, c.rope_theta)
    new_kv = None
    if cache_kv is not None:
      ck, cv = cache_kv
      k = write_at(ck, k, index)
      v = write_at(cv, v, index)
      new_kv = (k, v)
    groups = c.num_heads // c.num_kv_heads
    q = q.reshape(b, t, c.num_kv_heads, groups, c.head_dim)
    k, v = k.astype(q.dtype), v.astype(c.dtype)
    chunk = c.attention_chunk
    if chunk and t > chunk and t % chunk == 0:
      # Query blocks one at a time: peak score memory [B, H, chunk, S] instead of [B, H, T, S].
      n = t // chunk
      blocks = (q.reshape(b, n, chunk, *q.shape[2:]).swapaxes(0, 1),
                segment_ids.reshape(b, n, chunk).swapaxes(0, 1),
                positions.reshape(b, n, chunk).swapaxes(0, 1))
      out = jax.lax.map(lambda a: _attend(a[0], k, v, a[1], a[2], kv_seg, kv_pos, c), blocks)
      out = out.swapaxes(0, 1).reshape(b, t, c.num_kv_heads, groups, c.head_dim)
    else:
      out = _attend(q, k, v, segment_ids, positions, kv_seg, kv_pos, c)
    return self.o_proj(out.reshape(b, t, c.num_heads * c.head_dim)), new_kv


def _attend(q, k, v, q_seg, q_pos, kv_seg, kv_pos, c: ModelConfig) -> jax.Array:
  """Masked softmax attention; q: [B, T, KVH, G, D], k, v: [B, S, KVH, D] (fp32 scores).

  Heads move next to the batch first ([B, KVH, G*T, D] against [B, KVH, S, D]), so both
  products are plain batched matmuls with the contracted dimension minor: on CPU the
  einsums over the token-major layout made XLA transpose score-sized tensors (forward and
  backward) and cost about twice as much.
  """
  b, t, kh, g, d = q.shape
  s = k.shape[1]
  qt = q.transpose(0, 2, 3, 1, 4).reshape(b, kh, g * t, d)
  kt, vt = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
  scores = jnp.einsum("bkqd,bksd->bkqs", qt, kt,
                      preferred_element_type=jnp.float32) * (c.head_dim ** -0.5)
  mask = attention_mask(q_seg, q_pos, kv_seg, kv_pos)[:, None, None]
  scores = jnp.where(mask, scores.reshape(b, kh, g, t, s), _NEG_INF)
  probs = jax.nn.softmax(scores, axis=-1).astype(c.dtype).reshape(b, kh, g * t, s)
  out = jnp.einsum("bkqs,bksd->bkqd", probs, vt)
  return out.reshape(b, kh, g, t, d).transpose(0, 3, 1, 2, 4)


class MLP(nnx.Module):

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    c = config
    kw = dict(use_bias=False, dtype=c.dtype, param_dtype=c.param_dtype, rngs=rngs)
    self.gate_proj = Linear(c.hidden_size, c.intermediate_size, ("embed", "mlp"), **kw)
    self.up_proj = Linear(c.hidden_size, c.intermediate_size, ("embed", "mlp"), **kw)
    self.down_proj = Linear(c.intermediate_size, c.hidden_size, ("mlp", "embed"), **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nnx.Module):

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    c = config
    norm = dict(dtype=c.dtype, param_dtype=c.param_dtype)
    self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, **norm)
    self.self_attn = Attention(c, rngs=rngs)
    self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, **norm)
    self.mlp = MLP(c, rngs=rngs)

  def __call__(self, x, positions, segment_ids, cache_kv, kv_seg, kv_pos, index):
    h, new_kv = self.self_attn(
        self.input_layernorm(x), positions, segment_ids, cache_kv, kv_seg, kv_pos, index)
    x = x + h
    x = x + self.mlp(self.post_attention_layernorm(x))
    return x, new_kv


def _layer_forward(layer, x, positions, segment_ids, kv_seg, kv_pos):
  return layer(x, positions, segment_ids, None, kv_seg, kv_pos, None)[0]


class Transformer(nnx.Module):
  """Decoder-only LM. `model(tokens, positions, segment_ids, cache) -> (logits fp32, cache)`."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    c = config
    self.config = c
    self.embed_tokens = param(_INIT, rngs.params(), (c.vocab_size, c.hidden_size), c.param_dtype,
                              ("vocab", "embed"))
    self.layers = nnx.List([DecoderLayer(c, rngs=rngs) for _ in range(c.num_layers)])
    self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps, dtype=c.dtype, param_dtype=c.param_dtype)
    self.lora_config = None  # set by `lora.apply_lora`
    if c.tie_word_embeddings:
      self.lm_head = None
    else:
      self.lm_head = Linear(c.hidden_size, c.vocab_size, ("embed", "vocab"), use_bias=False,
                            dtype=c.dtype, param_dtype=c.param_dtype, rngs=rngs)

  def __call__(
      self,
      tokens: jax.Array,
      positions: jax.Array,
      segment_ids: jax.Array,
      cache: KVCache | None = None,
      *,
      return_hidden: bool = False,
  ) -> tuple[jax.Array, KVCache | None]:
    """Args:
      tokens, positions, segment_ids: [B, T] int32 (segment 0 = padding).
      cache: optional KVCache; the T new tokens are written at `cache.index`.
      return_hidden: return the final normed hidden states [B, T, E] instead of logits
        (for memory-efficient chunked losses; see `logits_from_hidden`).

    Returns:
      (logits [B, T, V] float32, updated cache or None).
    """
    c = self.config
    tokens = tokens.astype(jnp.int32)
    positions = positions.astype(jnp.int32)
    segment_ids = segment_ids.astype(jnp.int32)
    x = constrain(jnp.take(self.embed_tokens[...], tokens, axis=0).astype(c.dtype), _ACT)
    if cache is None:
      kv_seg, kv_pos = segment_ids, positions
      if c.remat:
        fwd = nnx.remat(_layer_forward)
      else:
        fwd = _layer_forward
      for layer in self.layers:
        x = constrain(fwd(layer, x, positions, segment_ids, kv_seg, kv_pos), _ACT)
      new_cache = None
    else:
      kv_seg = write_at(cache.segment_ids, segment_ids, cache.index)
      kv_pos = write_at(cache.positions, positions, cache.index)
      ks, vs = [], []
      for i, layer in enumerate(self.layers):
        x, (k, v) = layer(x, positions, segment_ids, (cache.k[i], cache.v[i]), kv_seg, kv_pos,
                          cache.index)
        x = constrain(x, _ACT)
        ks.append(k)
        vs.append(v)
      new_cache = KVCache(k=tuple(ks), v=tuple(vs), segment_ids=kv_seg, positions=kv_pos,
                          index=cache.index + tokens.shape[1])
    x = self.norm(x)
    if return_hidden:
      return x, new_cache
    logits = self.logits_from_hidden(x)
    return constrain(logits, ("batch", "activation_length", "activation_vocab")), new_cache

  def logits_from_hidden(self, x: jax.Array) -> jax.Array:
    """Final projection to the vocabulary, accumulated and returned in float32."""
    if self.lm_head is None:
      w = self.embed_tokens[...].astype(self.config.dtype)
      return jnp.einsum("bte,ve->btv", x, w, preferred_element_type=jnp.float32)
    head = self.lm_head
    w = head.kernel[...].astype(self.config.dtype)
    out = jnp.einsum("bte,ev->btv", x, w, preferred_element_type=jnp.float32)
    if head.lora is not None:
      out = out + head.lora(x).astype(jnp.float32)
    return out


def init_model(config: ModelConfig, seed: int = 0) -> Transformer:
  return Transformer(config, rngs=nnx.Rngs(params=seed))


def default_positions(segment_ids: jax.Array) -> jax.Array:
  """Positions that restart at 0 in each segment and ignore padding (segment 0).

  Works for left padding, right padding and packed rows alike.
  """
  seg = segment_ids
  valid = (seg != 0).astype(jnp.int32)
  start = jnp.concatenate([jnp.ones_like(seg[:, :1], dtype=bool), seg[:, 1:] != seg[:, :-1]], 1)
  idx = jnp.arange(seg.shape[1])[None, :]
  seg_start = jax.lax.cummax(jnp.where(start, idx, 0), axis=1)
  return jnp.where(valid == 1, idx - seg_start, 0).astype(jnp.int32)
