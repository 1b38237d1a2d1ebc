"""Per-row token sampling: temperature, top-k, top-p, greedy, with per-row PRNG keys."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def sampling_mode(temperature, top_k, top_p, max_k: int = 256) -> str | int:
  """The cheapest exact sampler for a batch (a static jit argument).

  "greedy" (all rows argmax), "plain" (no top-k/top-p: categorical on the scaled logits),
  an int K (every sampled row has 0 < top_k <= K: `lax.top_k(K)` instead of a full sort),
  or "full" (sort the whole vocabulary).
  """
  import numpy as np

  temperature, top_k, top_p = (np.asarray(x) for x in (temperature, top_k, top_p))
  sampled = temperature > 0
  if not sampled.any():
    return "greedy"
  if np.all((top_k[sampled] == 0) & (top_p[sampled] >= 1.0)):
    return "plain"
  if np.all(top_k[sampled] > 0) and top_k[sampled].max() <= max_k:
    return max(8, 1 << int(np.ceil(np.log2(top_k[sampled].max()))))
  return "full"


def sample_tokens(
    logits: jax.Array,
    temperature: jax.Array,
    top_k: jax.Array,
    top_p: jax.Array,
    keys: jax.Array,
    *,
    mode: str | int = "full",
) -> jax.Array:
  """Samples one token per row.

  Args:
    logits: [B, V] float32.
    temperature: [B]; 0 means greedy (argmax).
    top_k: [B] int; 0 means no top-k cut.
    top_p: [B] in (0, 1]; 1 means no nucleus cut (applied after top-k, as transformers).
    keys: [B] PRNG keys (one stream per request, so results do not depend on batch-mates).
    mode: static, from `sampling_mode` (all modes give the same distribution).

  Returns:
    [B] int32 token ids.
  """
  greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  if mode == "greedy":
    return greedy
  v = logits.shape[-1]
  scaled = logits / jnp.maximum(temperature, 1e-6)[:, None]
  # Gumbel-max with one noise value per (row, token id): every mode picks the same token for
  # the same key, so a request's sample never depends on which batch (mode) it landed in.
  gumbel = jax.vmap(lambda k: jax.random.gumbel(k, (v,), jnp.float32))(keys)
  if mode == "plain":
    sampled = jnp.argmax(scaled + gumbel, axis=-1).astype(jnp.int32)
    return jnp.where(temperature > 0, sampled, greedy)
  if isinstance(mode, int):
    sorted_logits, order = jax.lax.top_k(scaled, min(mode, v))
  else:
    order = jnp.argsort(-scaled, axis=-1)
    sorted_logits = jnp.take_along_axis(scaled, order, axis=-1)
  rank = jnp.arange(sorted_logits.shape[-1])[None, :]
  k = jnp.where(top_k > 0, top_k, v)[:, None]
  keep = rank < k
  probs = jax.nn.softmax(jnp.where(keep, sorted_logits, -jnp.inf), axis=-1)
  # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
  mass_before = jnp.cumsum(probs, axis=-1) - probs
  keep = keep & (mass_before < top_p[:, None])
  noisy = sorted_logits + jnp.take_along_axis(gumbel, order, axis=-1)
  choice = jnp.argmax(jnp.where(keep, noisy, -jnp.inf), axis=-1)
  sampled = jnp.take_along_axis(order, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)
  return jnp.where(temperature > 0, sampled, greedy)
