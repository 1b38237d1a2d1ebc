"""The pure, jitted pieces of training: optimizer, masked loss, train step, eval step.

Parameters travel as pure dicts split off an NNX model: `params` (trainable,
float32 master weights, updated by optax) and `frozen` (everything else, e.g.
the base weights under LoRA, possibly stored in bfloat16). The model's
compute dtype comes from its `ModelConfig.dtype`. A global batch has shape
`[accum_steps, micro_batch, row_length]`; the step scans over the
microbatches, sums weighted losses and gradients, and normalises once by the
batch's total loss weight -- so accumulation equals one big batch exactly.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  learning_rate: float = 2e-4  # peak learning rate
  warmup_steps: int = 5  # linear warmup from 0
  total_steps: int = 1000  # warmup + cosine decay length
  end_lr_ratio: float = 0.1  # final lr as a fraction of the peak
  weight_decay: float = 0.0  # AdamW decay on matrices (ndim >= 2) only
  b1: float = 0.9
  b2: float = 0.99  # as the train_proficiency config (one default, checked by test_repo)
  eps: float = 1e-8
  clip_norm: float = 1.0  # global gradient-norm clip (0 = off)


def make_optimizer(cfg: OptimConfig) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """AdamW with warmup + cosine decay and global-norm clipping."""
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=cfg.learning_rate, warmup_steps=cfg.warmup_steps,
      decay_steps=max(cfg.total_steps, cfg.warmup_steps + 1),
      end_value=cfg.learning_rate * cfg.end_lr_ratio)
  parts = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm > 0 else []
  parts.append(optax.adamw(
      schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
      mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p)))
  return optax.chain(*parts), schedule


@struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: optimizer steps taken
  params: Any  # trainable parameters (pure dict, float32)
  opt_state: Any


def masked_token_stats(logits: jax.Array, targets: jax.Array, weights: jax.Array
                       ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Sums of weighted cross-entropy, of correct trained tokens, and of trained tokens."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
  trained = weights > 0
  correct = (jnp.argmax(logits, axis=-1) == targets) & trained
  return (jnp.sum(ce * weights), jnp.sum(correct.astype(jnp.float32)),
          jnp.sum(trained.astype(jnp.float32)))


def _batch_sums(model: nnx.Module, batch: dict[str, jax.Array], loss_chunk: int
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Loss sums over a `[B, T]` batch; with `loss_chunk`, logits exist one chunk at a time."""
  t = batch["inputs"].shape[1]
  if not loss_chunk or loss_chunk >= t:
    logits, _ = model(batch["inputs"], batch["positions"], batch["segment_ids"])
    return masked_token_stats(logits, batch["targets"], batch["weights"])
  if t % loss_chunk:
    raise ValueError(f"loss_chunk {loss_chunk} must divide the row length {t}")
  hidden, _ = model(batch["inputs"], batch["positions"], batch["segment_ids"], return_hidden=True)
  n = t // loss_chunk

  def chunks(x):
    return jnp.moveaxis(x.reshape(x.shape[0], n, loss_chunk, *x.shape[2:]), 1, 0)

  @jax.checkpoint
  def one(h, y, w):
    return masked_token_stats(model.logits_from_hidden(h), y, w)

  def body(acc, xs):
    return jax.tree.map(jnp.add, acc, one(*xs)), None

  zero = (jnp.zeros((), jnp.float32),) * 3
  sums, _ = jax.lax.scan(body, zero, (chunks(hidden), chunks(batch["targets"]),
                                      chunks(batch["weights"])))
  return sums


def _sums_fn(graphdef: nnx.GraphDef, loss_chunk: int):
  def f(params, frozen, micro):
    model = nnx.merge(graphdef, params, frozen)
    loss_sum, correct, count = _batch_sums(model, micro, loss_chunk)
    return loss_sum, (correct, count, jnp.sum(micro["weights"]))
  return f


def _norm(tree: Any) -> jax.Array:
  return optax.tree.norm(jax.tree.map(lambda x: x.astype(jnp.float32), tree))


def train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
               schedule: optax.Schedule, loss_chunk: int, state: TrainState, frozen: Any,
               batch: dict[str, jax.Array]) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on a `[accum, micro, T]` batch; returns the new state and metrics."""
  grad_fn = jax.value_and_grad(_sums_fn(graphdef, loss_chunk), has_aux=True)

  def micro_step(carry, micro):
    grads, loss_sum, correct, count, wsum = carry
    (loss, (c, n, w)), g = grad_fn(state.params, frozen, micro)
    return (jax.tree.map(jnp.add, grads, g), loss_sum + loss, correct + c, count + n, wsum + w), None

  zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
  z = jnp.zeros((), jnp.float32)
  if batch["inputs"].shape[0] == 1:  # no accumulation: no loop (XLA drops the zero adds)
    (grads, loss_sum, correct, count, wsum), _ = micro_step(
        (zeros, z, z, z, z), jax.tree.map(lambda x: x[0], batch))
  else:
    (grads, loss_sum, correct, count, wsum), _ = jax.lax.scan(
        micro_step, (zeros, z, z, z, z), batch)
  denom = jnp.maximum(wsum, 1e-6)
  grads = jax.tree.map(lambda g: g / denom, grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {
      "loss": loss_sum / denom,
      "accuracy": correct / jnp.maximum(count, 1.0),
      "trained_tokens": count,
      "tokens": jnp.sum((batch["segment_ids"] > 0).astype(jnp.float32)),
      "grad_norm": _norm(grads),
      "update_norm": _norm(updates),
      "param_norm": _norm(params),
      "learning_rate": schedule(state.step),
  }
  return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


def eval_step(graphdef: nnx.GraphDef, loss_chunk: int, params: Any, frozen: Any,
              batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """Loss and accuracy sums on a `[B, T]` batch (summed over batches by the caller)."""
  loss_sum, (correct, count, wsum) = _sums_fn(graphdef, loss_chunk)(params, frozen, batch)
  return {"loss_sum": loss_sum, "correct": correct, "trained_tokens": count, "weight_sum": wsum}
