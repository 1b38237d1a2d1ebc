"""Logical axis names -> mesh axes, mesh construction, and placing a model on a mesh.

Every parameter carries logical axis names in its `out_sharding` metadata (set with
`nnx.with_partitioning`), e.g. `("embed", "mlp")`. A rules table maps each logical name
to a mesh axis (or a tuple of them, or None = replicated), as in MaxText and the Flax
examples. The mesh has three axes: `data` (pure data parallel), `fsdp` (data parallel
with parameters sharded over it) and `tensor` (Megatron-style model parallel).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis -> mesh axis (None = replicated).
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),  # activations: batch over every data-parallel axis
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_vocab", "tensor"),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),  # q heads * head_dim (flattened)
    ("kv_heads", "tensor"),  # kv heads * head_dim (flattened)
    ("mlp", "tensor"),
    ("norm", None),
    ("head_dim", None),
    ("lora_rank", None),
)


def logical_to_mesh(
    names: Sequence[str | None] | None, rules: Sequence[tuple[str, Any]] = DEFAULT_RULES
) -> PartitionSpec:
  """Maps a tuple of logical axis names to a `PartitionSpec` of mesh axes."""
  if not names:
    return PartitionSpec()
  table = dict(rules)
  out = []
  for n in names:
    if n is None:
      out.append(None)
    elif n not in table:
      raise KeyError(f"logical axis {n!r} has no sharding rule")
    else:
      out.append(table[n])
  return PartitionSpec(*out)


def make_mesh(
    data: int = 1, fsdp: int = -1, tensor: int = 1, devices: Sequence[Any] | None = None
) -> Mesh:
  """Builds a (data, fsdp, tensor) mesh; one axis may be -1 to take the remaining devices."""
  devices = list(jax.devices() if devices is None else devices)
  shape = [data, fsdp, tensor]
  if shape.count(-1) > 1:
    raise ValueError("at most one mesh axis may be -1")
  known = int(np.prod([s for s in shape if s != -1]))
  if -1 in shape:
    if len(devices) % known:
      raise ValueError(f"{len(devices)} devices are not divisible by {known}")
    shape[shape.index(-1)] = len(devices) // known
  n = int(np.prod(shape))
  if n > len(devices):
    raise ValueError(f"mesh {dict(zip(MESH_AXES, shape))} needs {n} devices, have {len(devices)}")
  return Mesh(np.asarray(devices[:n]).reshape(shape), MESH_AXES)


def mesh_from_config(cfg: Mapping[str, Any]) -> Mesh:
  """Mesh from a config with `data`, `fsdp`, `tensor` entries (e.g. an ml_collections dict)."""
  return make_mesh(data=cfg.get("data", 1), fsdp=cfg.get("fsdp", -1), tensor=cfg.get("tensor", 1))


def variable_spec(
    v: nnx.Variable, rules: Sequence[tuple[str, Any]] = DEFAULT_RULES
) -> PartitionSpec:
  return logical_to_mesh(v.get_metadata().get("out_sharding"), rules)


def state_shardings(
    state: Any, mesh: Mesh, rules: Sequence[tuple[str, Any]] = DEFAULT_RULES
) -> Any:
  """NamedSharding tree matching `state` (an nnx.State of Variables)."""

  def f(v):
    if isinstance(v, nnx.Variable):
      spec = _fit_spec(variable_spec(v, rules), v.shape, mesh)
      return v.replace(NamedSharding(mesh, spec))
    return NamedSharding(mesh, PartitionSpec())

  return jax.tree.map(f, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def _fit_spec(spec: PartitionSpec, shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
  """Drops mesh axes from dims they do not divide (tiny test models), keeping the rest."""
  out = []
  for i, axes in enumerate(tuple(spec) + (None,) * (len(shape) - len(spec))):
    if axes is None:
      out.append(None)
      continue
    names = (axes,) if isinstance(axes, str) else tuple(axes)
    keep = []
    size = 1
    for a in names:
      if shape[i] % (size * mesh.shape[a]) == 0:
        keep.append(a)
        size *= mesh.shape[a]
    out.append(None if not keep else keep[0] if len(keep) == 1 else tuple(keep))
  return PartitionSpec(*out)


def param_sharding(
    names: Sequence[str | None] | None,
    shape: Sequence[int],
    mesh: Mesh,
    rules: Sequence[tuple[str, Any]] = DEFAULT_RULES,
) -> NamedSharding:
  return NamedSharding(mesh, _fit_spec(logical_to_mesh(names, rules), shape, mesh))


def shard_model(
    model: nnx.Module, mesh: Mesh, rules: Sequence[tuple[str, Any]] = DEFAULT_RULES
) -> nnx.Module:
  """Places every variable of `model` on `mesh` by its logical axes (in place; returns model)."""
  state = nnx.state(model)
  shardings = state_shardings(state, mesh, rules)
  state = jax.tree.map(
      lambda v, s: v.replace(jax.device_put(v.get_value(), s.get_value())),
      state,
      shardings,
      is_leaf=lambda x: isinstance(x, nnx.Variable),
  )
  nnx.update(model, state)
  return model


def constrain(
    x: jax.Array, names: Sequence[str | None], rules: Sequence[tuple[str, Any]] = DEFAULT_RULES
) -> jax.Array:
  """Activation sharding constraint by logical names under the ambient mesh.

  Active only inside `jax.set_mesh(mesh)` with a (data, fsdp, tensor) mesh (as trainers use);
  a no-op otherwise, so the same model code runs unsharded. Axes that do not divide a dim
  are dropped (e.g. batch 1 in decode).
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or not set(MESH_AXES) <= set(mesh.axis_names):
    return x
  spec = _fit_spec(logical_to_mesh(names, rules), x.shape, mesh)
  return jax.lax.with_sharding_constraint(x, spec)
