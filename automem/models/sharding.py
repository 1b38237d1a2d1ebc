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


def shard_state(state: Any, mesh: Mesh, rules: Sequence[tuple[str, Any]] = DEFAULT_RULES) -> Any:
  """`state` (an nnx.State) with every value placed on `mesh` by its logical axes.

  A value already placed that way is kept as it is (no copy): engines that share base weights
  stay shared.
  """
  return jax.tree.map(
      lambda v, s: v.replace(jax.device_put(v.get_value(), s.get_value())),
      state,
      state_shardings(state, mesh, rules),
      is_leaf=lambda x: isinstance(x, nnx.Variable),
  )


def shard_model(
    model: nnx.Module, mesh: Mesh, rules: Sequence[tuple[str, Any]] = DEFAULT_RULES
) -> nnx.Module:
  """Places every variable of `model` on `mesh` by its logical axes (in place; returns model)."""
  nnx.update(model, shard_state(nnx.state(model), mesh, rules))
  return model


# -- inference meshes (the generation engine) ------------------------------------------------

# The KV cache [slots, length, kv_heads, head_dim]: kv heads over `tensor` (as the k/v
# projections), slots and positions replicated (the engine's slot count has no fixed divisor).
KV_CACHE_AXES = (None, None, "kv_heads", "head_dim")


def parse_mesh_spec(spec: str) -> dict[str, int] | None:
  """`"fsdp=2,tensor=4"` -> {"data": 1, "fsdp": 2, "tensor": 4}; `""` -> None (one device).

  Axes not named are 1; one axis may be -1 (the devices the others leave). Raises ValueError
  with a one-line message for anything else.
  """
  spec = (spec or "").strip()
  if not spec:
    return None
  sizes = dict.fromkeys(MESH_AXES, 1)
  seen = set()
  for item in (x.strip() for x in spec.split(",")):
    name, sep, value = (x.strip() for x in item.partition("="))
    if not sep or name not in MESH_AXES:
      raise ValueError(f"{item!r} is not AXIS=SIZE with AXIS one of {', '.join(MESH_AXES)} "
                       "(e.g. 'tensor=-1' or 'fsdp=2,tensor=4')")
    if name in seen:
      raise ValueError(f"axis {name!r} is given twice in {spec!r}")
    seen.add(name)
    try:
      size = int(value)
    except ValueError:
      raise ValueError(f"{item!r}: size {value!r} is not an integer") from None
    if size < 1 and size != -1:
      raise ValueError(f"{item!r}: a size is a positive integer or -1 (the remaining devices)")
    sizes[name] = size
  return sizes


def check_inference_mesh(mesh: Mesh, num_kv_heads: int) -> None:
  """Raises ValueError unless `mesh` is a (data, fsdp, tensor) mesh whose tensor axis splits
  the model's KV heads evenly (the KV cache and k/v projections are split by head)."""
  if tuple(mesh.axis_names) != MESH_AXES:
    raise ValueError(f"the mesh axes are {tuple(mesh.axis_names)}, expected {MESH_AXES}")
  tensor = mesh.shape["tensor"]
  if num_kv_heads % tensor:
    divisors = [d for d in range(1, num_kv_heads + 1) if num_kv_heads % d == 0]
    raise ValueError(f"tensor={tensor} does not divide the model's {num_kv_heads} KV heads "
                     f"(use tensor in {divisors}; data or fsdp take the other devices)")


def inference_mesh(spec: str, num_kv_heads: int, devices: Sequence[Any] | None = None
                   ) -> Mesh | None:
  """The generation engine's mesh for a spec (`parse_mesh_spec`) over this process's devices
  (or `devices`), checked against the model; None for `""`. Raises ValueError (one line)."""
  sizes = parse_mesh_spec(spec)
  if sizes is None:
    return None
  devices = list(jax.local_devices() if devices is None else devices)
  mesh = make_mesh(**sizes, devices=devices)
  check_inference_mesh(mesh, num_kv_heads)
  return mesh


def kv_cache_sharding(mesh: Mesh, rules: Sequence[tuple[str, Any]] = DEFAULT_RULES
                      ) -> NamedSharding:
  """Sharding of a KV cache array [slots or batch, length, kv_heads, head_dim] on `mesh`."""
  return NamedSharding(mesh, logical_to_mesh(KV_CACHE_AXES, rules))


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
