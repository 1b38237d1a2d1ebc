"""Sampler: exact distributions, and the same token for the same key in every mode."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from automem.models.sampling import sample_tokens, sampling_mode

N = 4000
LOGITS = jnp.log(jnp.asarray([0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.02] + [0.0] * 9) + 1e-30)


def _draw(temp, top_k, top_p, mode, seed=0):
  logits = jnp.broadcast_to(LOGITS, (N, LOGITS.shape[0]))
  keys = jax.random.split(jax.random.key(seed), N)
  full = lambda x: jnp.full((N,), x)  # noqa: E731
  fn = jax.jit(sample_tokens, static_argnames="mode")
  return np.asarray(fn(logits, full(temp), full(top_k).astype(jnp.int32), full(top_p), keys,
                       mode=mode))


def _freq(x):
  return np.bincount(x, minlength=LOGITS.shape[0]) / len(x)


@pytest.mark.parametrize("mode", ["full", 8])
def test_top_k_top_p_distribution(mode):
  # top_k=4 keeps [.4,.25,.15,.1] (renormalised to /.9); top_p=0.7 then keeps the first two
  # (mass before the third is .65/.9 = .72 >= .7).
  x = _draw(1.0, 4, 0.7, mode)
  f = _freq(x)
  assert set(np.unique(x)) == {0, 1}
  np.testing.assert_allclose(f[:2], [0.4 / 0.65, 0.25 / 0.65], atol=0.03)


def test_plain_distribution_and_modes_agree():
  plain = _draw(1.0, 0, 1.0, "plain")
  np.testing.assert_allclose(_freq(plain)[:7], [0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.02],
                             atol=0.025)
  # Same keys, no cut: the plain, top-k (k >= vocab) and full-sort paths pick the same tokens.
  np.testing.assert_array_equal(plain, _draw(1.0, 0, 1.0, "full"))
  np.testing.assert_array_equal(_draw(1.0, 5, 0.9, "full"), _draw(1.0, 5, 0.9, 8))
  assert (_draw(0.0, 0, 1.0, "full") == 0).all()
  assert (_draw(2.0, 1, 1.0, 8) == 0).all()


def test_sampling_mode_choice():
  assert sampling_mode([0.0, 0.0], [0, 5], [1.0, 0.5]) == "greedy"
  assert sampling_mode([0.7, 0.0], [0, 5], [1.0, 0.5]) == "plain"
  assert sampling_mode([0.7, 1.0], [20, 3], [0.9, 1.0]) == 32
  assert sampling_mode([0.7, 1.0], [0, 3], [0.9, 1.0]) == "full"
  assert sampling_mode([0.7], [1000], [1.0]) == "full"
