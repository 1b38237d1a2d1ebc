"""A model split into trainable and frozen parts, placed on a mesh, with jitted steps.

`Trainer` owns the static side of a run (graph definition, optimizer,
shardings, compiled functions); the dynamic side is a `TrainState` that goes
in and out of `step` (donated) and into checkpoints. Trainable parameters are
float32 master weights; frozen ones may be stored in bfloat16; the compute
dtype is the model config's.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from automem.models import sharding as shd
from automem.proficiency import steps

BATCH_AXES = ("data", "fsdp")


def trainable_filter(finetune: str) -> Any:
  """Which variables the optimizer updates: LoRA adapters only, or every parameter."""
  if finetune == "lora":
    return nnx.LoRAParam
  if finetune == "full":
    return nnx.Param
  raise ValueError(f"finetune must be 'lora' or 'full', got {finetune!r}")


def _cast_floats(tree: Any, dtype: Any) -> Any:
  return jax.tree.map(
      lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def _pure_shardings(state: nnx.State, mesh: Mesh, rules: Sequence[tuple[str, Any]]) -> Any:
  return nnx.to_pure_dict(shd.state_shardings(state, mesh, rules))


class Trainer:
  """Static half of training: split model, shardings, optimizer and compiled steps."""

  def __init__(self, model: nnx.Module, mesh: Mesh, optim: steps.OptimConfig, *,
               finetune: str = "lora", frozen_dtype: Any = jnp.bfloat16, loss_chunk: int = 0,
               rules: Sequence[tuple[str, Any]] = shd.DEFAULT_RULES):
    self.mesh = mesh
    self.finetune = finetune
    self.loss_chunk = loss_chunk
    graphdef, trainable, frozen = nnx.split(model, trainable_filter(finetune), ...)
    if not jax.tree.leaves(trainable):
      raise ValueError(f"finetune={finetune!r} but the model has no such parameters "
                       "(did you forget apply_lora?)")
    self.graphdef = graphdef
    self.param_shardings = _pure_shardings(trainable, mesh, rules)
    self.frozen_shardings = _pure_shardings(frozen, mesh, rules)
    self.replicated = NamedSharding(mesh, PartitionSpec())
    self._params0 = jax.jit(lambda t: _cast_floats(t, jnp.float32),
                            out_shardings=self.param_shardings)(nnx.to_pure_dict(trainable))
    self.frozen = jax.jit(lambda t: _cast_floats(t, frozen_dtype),
                          out_shardings=self.frozen_shardings)(nnx.to_pure_dict(frozen))
    self.tx, self.schedule = steps.make_optimizer(optim)
    abstract_opt = jax.eval_shape(self.tx.init, self._params0)
    self.opt_shardings = optax.tree_map_params(
        self.tx, lambda _, s: s, abstract_opt, self.param_shardings,
        transform_non_params=lambda _: self.replicated)
    self.state_shardings = steps.TrainState(
        step=self.replicated, params=self.param_shardings, opt_state=self.opt_shardings)
    self.batch_sharding = NamedSharding(mesh, PartitionSpec(None, BATCH_AXES, None))
    self.eval_sharding = NamedSharding(mesh, PartitionSpec(BATCH_AXES, None))
    self._init = jax.jit(self._init_fn, out_shardings=self.state_shardings)
    self._step = jax.jit(
        functools.partial(steps.train_step, self.graphdef, self.tx, self.schedule, loss_chunk),
        in_shardings=(self.state_shardings, self.frozen_shardings, self.batch_sharding),
        out_shardings=(self.state_shardings, self.replicated), donate_argnums=0)
    self._eval = jax.jit(
        functools.partial(steps.eval_step, self.graphdef, loss_chunk),
        in_shardings=(self.param_shardings, self.frozen_shardings, self.eval_sharding),
        out_shardings=self.replicated)

  def _init_fn(self, params: Any) -> steps.TrainState:
    return steps.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                            opt_state=self.tx.init(params))

  @property
  def num_trainable(self) -> int:
    return sum(x.size for x in jax.tree.leaves(self._params0))

  @property
  def num_frozen(self) -> int:
    return sum(x.size for x in jax.tree.leaves(self.frozen))

  def init_state(self) -> steps.TrainState:
    """The step-0 state (a copy of the initial trainable parameters, fresh optimizer)."""
    return self._init(jax.tree.map(jnp.copy, self._params0))

  def abstract_state(self) -> steps.TrainState:
    """Shapes, dtypes and shardings of the state, without allocating it (for restores)."""
    abstract = jax.eval_shape(self._init_fn, self._params0)
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract, self.state_shardings)

  def step(self, state: steps.TrainState, batch: dict[str, jax.Array]
           ) -> tuple[steps.TrainState, dict[str, jax.Array]]:
    """One optimizer step; `state` is donated (do not use it afterwards)."""
    return self._step(state, self.frozen, batch)

  def evaluate(self, params: Any, batches: Iterable[dict[str, jax.Array]]) -> dict[str, float]:
    """Mean masked loss and token accuracy over every batch."""
    total: dict[str, jax.Array] | None = None
    for batch in batches:
      sums = self._eval(params, self.frozen, batch)
      total = sums if total is None else jax.tree.map(jnp.add, total, sums)
    if total is None:
      return {}
    t = jax.device_get(total)
    return {"loss": float(t["loss_sum"] / max(t["weight_sum"], 1e-6)),
            "accuracy": float(t["correct"] / max(t["trained_tokens"], 1.0)),
            "trained_tokens": float(t["trained_tokens"])}

  def merged_model(self, params: Any) -> nnx.Module:
    """An NNX model holding `params` (frozen parts as stored), e.g. for export."""
    return nnx.merge(self.graphdef, params, self.frozen)
