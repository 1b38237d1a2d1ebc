"""Per-row token sampling: temperature, top-k, top-p, greedy, with per-row PRNG keys."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def sample_tokens(
    logits: jax.Array,
    temperature: jax.Array,
    top_k: jax.Array,
    top_p: jax.Array,
    keys: jax.Array,
    *,
    greedy_only: bool = False,
) -> jax.Array:
  """Samples one token per row.

  Args:
    logits: [B, V] float32.
    temperature: [B]; 0 means greedy (argmax).
    top_k: [B] int; 0 means no top-k cut.
    top_p: [B] in (0, 1]; 1 means no nucleus cut.
    keys: [B] PRNG keys (one stream per request, so results do not depend on batch-mates).
    greedy_only: static; skip the sort when every row is greedy.

  Returns:
    [B] int32 token ids.
  """
  greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  if greedy_only:
    return greedy
  v = logits.shape[-1]
  scaled = logits / jnp.maximum(temperature, 1e-6)[:, None]
  order = jnp.argsort(-scaled, axis=-1)
  sorted_logits = jnp.take_along_axis(scaled, order, axis=-1)
  rank = jnp.arange(v)[None, :]
  k = jnp.where(top_k > 0, top_k, v)[:, None]
  keep = rank < k
  probs = jax.nn.softmax(jnp.where(keep, sorted_logits, -jnp.inf), axis=-1)
  # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
  mass_before = jnp.cumsum(probs, axis=-1) - probs
  keep = keep & (mass_before < top_p[:, None])
  masked = jnp.where(keep, sorted_logits, -jnp.inf)
  choice = jax.vmap(lambda key, row: jax.random.categorical(key, row))(keys, masked)
  sampled = jnp.take_along_axis(order, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)
  return jnp.where(temperature > 0, sampled, greedy)
