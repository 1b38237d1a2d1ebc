"""Hugging Face checkpoint interop: safetensors in (tensor by tensor, sharded) and out.

Loading builds the abstract model with `nnx.eval_shape` (no memory), then fills each
parameter from a memory-mapped safetensors shard straight into its (sharded) array with
`jax.make_array_from_callback`, so each device reads only its own slice and the full model
never sits on one host first.
"""

from __future__ import annotations

import json
import os
import struct as _struct
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from automem.models import sharding as shd
from automem.models.config import ModelConfig, resolve_dtype
from automem.models.transformer import Transformer

_ST_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}


class CheckpointError(ValueError):
  """A checkpoint directory is missing tensors, has mis-shaped ones, or is unreadable."""


class SafetensorsFile:
  """Minimal zero-copy safetensors reader (numpy memmap; bf16 via ml_dtypes)."""

  def __init__(self, path: str):
    self.path = path
    size = os.path.getsize(path)
    try:
      with open(path, "rb") as f:
        (n,) = _struct.unpack("<Q", f.read(8))
        if 8 + n > size:
          raise ValueError(f"header of {n} bytes does not fit in a {size}-byte file")
        header = json.loads(f.read(n))
      if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    except (_struct.error, ValueError, UnicodeDecodeError) as e:
      raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    self.metadata = header.pop("__metadata__", None) or {}
    self.header = header
    self._offset = 8 + n
    for name, info in header.items():
      start, end = info.get("data_offsets", (0, -1))
      if not 0 <= start <= end or self._offset + end > size:
        raise CheckpointError(f"{path}: tensor {name} lies outside the file (truncated shard?)")
    self._mm = np.memmap(path, dtype=np.uint8, mode="r")

  def keys(self) -> list[str]:
    return list(self.header)

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self.header[name]["shape"])

  def get(self, name: str) -> np.ndarray:
    info = self.header[name]
    if info["dtype"] not in _ST_DTYPES:
      raise CheckpointError(f"{self.path}: tensor {name} has unsupported dtype {info['dtype']}")
    start, end = info["data_offsets"]
    raw = self._mm[self._offset + start : self._offset + end]
    try:
      return raw.view(_ST_DTYPES[info["dtype"]]).reshape(info["shape"])
    except ValueError as e:
      raise CheckpointError(f"{self.path}: tensor {name}: {e}") from e


def _open_shards(path: str) -> dict[str, SafetensorsFile]:
  """tensor name -> open shard, from `model.safetensors` or an index json."""
  index = os.path.join(path, "model.safetensors.index.json")
  files: list[str]
  if os.path.exists(index):
    with open(index) as f:
      weight_map = json.load(f)["weight_map"]
    files = sorted(set(weight_map.values()))
  else:
    files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    if not files:
      raise CheckpointError(f"no *.safetensors files in {path}")
  out: dict[str, SafetensorsFile] = {}
  for fn in files:
    full = os.path.join(path, fn)
    if not os.path.exists(full):
      raise CheckpointError(f"shard {fn} listed in the index is missing from {path}")
    st = SafetensorsFile(full)
    for k in st.header:
      out[k] = st
  return out


def hf_name(path: Sequence[Any]) -> tuple[str, bool]:
  """Our state path -> (HF tensor name, whether the HF tensor is the transpose of ours)."""
  parts = [str(p) for p in path]
  if parts[0] == "lm_head":
    return "lm_head.weight", True
  leaf = parts[-1]
  if leaf == "kernel":
    return "model." + ".".join(parts[:-1]) + ".weight", True
  if parts == ["embed_tokens"]:
    return "model.embed_tokens.weight", False
  return "model." + ".".join(parts), False


def _iter_params(state: Any) -> Iterator[tuple[tuple[Any, ...], nnx.Variable]]:
  yield from nnx.to_flat_state(state)


def load_hf_checkpoint(
    path: str,
    mesh: Mesh | None = None,
    *,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
    remat: bool = False,
    rules: Sequence[tuple[str, Any]] = shd.DEFAULT_RULES,
    config: ModelConfig | None = None,
) -> Transformer:
  """Loads a Qwen2/Qwen3 HF checkpoint directory into a `Transformer`.

  Args:
    path: directory with config.json and model.safetensors or sharded
      model-XXXXX-of-YYYYY.safetensors + model.safetensors.index.json.
    mesh: if given, every parameter is created sharded on it by its logical axes.
    dtype: compute dtype ("float32"/"bfloat16" or jnp dtype).
    param_dtype: dtype the weights are stored in (fp32 master weights by default).
    remat: rematerialise each layer in the backward pass.
    rules: logical-axis -> mesh-axis rules.
    config: overrides reading config.json.

  Raises:
    CheckpointError: missing, unexpected-shape or unreadable tensors (all listed at once).
  """
  if config is None:
    config = ModelConfig.from_pretrained(path)
  config = config.replace(dtype=resolve_dtype(dtype), param_dtype=resolve_dtype(param_dtype),
                          remat=remat)
  abstract = nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))
  graphdef, abs_state = nnx.split(abstract)
  tensors = _open_shards(path)
  problems: list[str] = []
  used: set[str] = set()
  flat = []
  for p, var in _iter_params(abs_state):
    name, transpose = hf_name(p)
    shape = tuple(var.shape)
    if name not in tensors:
      problems.append(f"missing tensor {name} (expected shape {shape})")
      flat.append((p, var))
      continue
    used.add(name)
    src_shape = tensors[name].shape(name)
    want = shape[::-1] if transpose else shape
    if src_shape != want:
      problems.append(f"tensor {name} has shape {src_shape}, expected {want}")
      flat.append((p, var))
      continue
    arr = tensors[name].get(name)
    if transpose:
      arr = arr.T
    names = var.get_metadata().get("out_sharding")
    if mesh is not None:
      sharding = shd.param_sharding(names, shape, mesh, rules)
    else:
      sharding = NamedSharding(_single_device_mesh(), PartitionSpec())
    value = _to_device(arr, shape, var.dtype, sharding)
    flat.append((p, var.replace(value)))
  if problems:
    raise CheckpointError(f"cannot load {path}:\n  " + "\n  ".join(problems))
  unexpected = sorted(
      k for k in tensors if k not in used and not k.endswith("rotary_emb.inv_freq")
      and not (config.tie_word_embeddings and k == "lm_head.weight"))
  if unexpected:
    raise CheckpointError(f"{path} has tensors this model does not use: {unexpected[:10]}")
  state = nnx.from_flat_state(flat)
  return nnx.merge(graphdef, state)


def _single_device_mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()[:1]), ("x",))


def _to_device(arr: np.ndarray, shape: tuple[int, ...], dtype: Any, sharding) -> jax.Array:
  def cb(index):
    return np.ascontiguousarray(arr[index]).astype(dtype)

  return jax.make_array_from_callback(shape, sharding, cb)


def to_host(x: jax.Array) -> np.ndarray:
  """Full value of a (possibly sharded, possibly multi-host) array as a numpy array."""
  if getattr(x, "is_fully_addressable", True):
    return np.asarray(jax.device_get(x))
  from jax.experimental import multihost_utils

  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def save_hf_checkpoint(
    model: Transformer,
    path: str,
    *,
    max_shard_bytes: int = 2 * 1024**3,
    dtype: Any = np.float32,
    extra_config: dict[str, Any] | None = None,
) -> None:
  """Writes config.json + safetensors (sharded with an index if over `max_shard_bytes`).

  Only base weights are written; LoRA adapters go through `export_lora_adapter`
  (or `merge_lora` first to bake them in). Loadable by transformers' AutoModelForCausalLM.
  Gathers one tensor at a time; with several processes every process must call this (the
  gathers are collective) and only process 0 writes.
  """
  from safetensors.numpy import save_file

  os.makedirs(path, exist_ok=True)
  config = model.config
  state = nnx.state(model, nnx.Param)
  shards: list[dict[str, np.ndarray]] = [{}]
  size = 0
  for p, var in _iter_params(state):
    if isinstance(var, nnx.LoRAParam) or "lora" in [str(x) for x in p]:
      continue
    name, transpose = hf_name(p)
    arr = to_host(var.get_value()).astype(dtype)
    if transpose:
      arr = arr.T
    arr = np.ascontiguousarray(arr)
    if size and size + arr.nbytes > max_shard_bytes:
      shards.append({})
      size = 0
    shards[-1][name] = arr
    size += arr.nbytes
  meta = {"format": "pt"}
  if jax.process_index() != 0:
    return
  if len(shards) == 1:
    save_file(shards[0], os.path.join(path, "model.safetensors"), metadata=meta)
  else:
    weight_map = {}
    total = 0
    for i, sh in enumerate(shards):
      fn = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
      save_file(sh, os.path.join(path, fn), metadata=meta)
      for k, a in sh.items():
        weight_map[k] = fn
        total += a.nbytes
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
      json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
  hf = config.to_hf_dict()
  if np.dtype(dtype) == np.dtype(ml_dtypes.bfloat16):
    hf["torch_dtype"] = hf["dtype"] = "bfloat16"
  hf.update(extra_config or {})
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(hf, f, indent=2)
  gen = {"eos_token_id": hf["eos_token_id"], "bos_token_id": config.bos_token_id,
         "pad_token_id": config.pad_token_id}
  with open(os.path.join(path, "generation_config.json"), "w") as f:
    json.dump({k: v for k, v in gen.items() if v is not None}, f, indent=2)
