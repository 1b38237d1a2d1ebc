"""LoRA adapters on chosen projections, and their PEFT-layout import/export.

Adapter weights are `nnx.LoRAParam` (a subclass of `nnx.Param`), so a trainer selects them
with `nnx.DiffState(0, nnx.LoRAParam)` / `nnx.Optimizer(model, tx, wrt=nnx.LoRAParam)` and
the base weights stay frozen. Output of an adapted projection: `W x + b + s * B(A(drop(x)))`
with `s = alpha / rank` (or `alpha / sqrt(rank)` with rsLoRA), as in PEFT.

PEFT names: `base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight` ([r, in]) and
`...lora_B.weight` ([out, r]), in `adapter_model.safetensors` + `adapter_config.json`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from automem.models import sharding as shd
from automem.models.transformer import Linear, Transformer, matmul, param

ALL_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """LoRA hyper-parameters; `targets` name projections (`q_proj`, ..., `lm_head`)."""

  rank: int = 8
  alpha: float = 16.0
  dropout: float = 0.0
  targets: tuple[str, ...] = ALL_TARGETS
  use_rslora: bool = False

  def __post_init__(self):
    targets = (self.targets,) if isinstance(self.targets, str) else tuple(self.targets)
    if targets in (("all-linear",), ("all",)):
      targets = ALL_TARGETS
    unknown = set(targets) - set(ALL_TARGETS) - {"lm_head"}
    if unknown:
      raise ValueError(f"unknown LoRA targets {sorted(unknown)}; choose from "
                       f"{[*ALL_TARGETS, 'lm_head']}")
    object.__setattr__(self, "targets", targets)
    if self.rank < 1:
      raise ValueError(f"rank must be >= 1, got {self.rank}")

  @property
  def scaling(self) -> float:
    return self.alpha / (math.sqrt(self.rank) if self.use_rslora else self.rank)

  def to_peft_dict(self, base_model_name_or_path: str = "") -> dict[str, Any]:
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path,
        "r": self.rank,
        "lora_alpha": self.alpha,
        "lora_dropout": self.dropout,
        "target_modules": sorted(self.targets),
        "use_rslora": self.use_rslora,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "modules_to_save": None,
        "use_dora": False,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }

  @classmethod
  def from_peft_dict(cls, d: dict[str, Any]) -> LoraConfig:
    if d.get("peft_type", "LORA") != "LORA":
      raise ValueError(f"not a LoRA adapter: peft_type={d.get('peft_type')!r}")
    if d.get("use_dora") or d.get("rank_pattern") or d.get("alpha_pattern"):
      raise NotImplementedError("DoRA and per-module rank/alpha patterns are not supported")
    targets = d.get("target_modules") or ALL_TARGETS
    if isinstance(targets, str):
      targets = ALL_TARGETS if targets == "all-linear" else (targets,)
    return cls(rank=int(d["r"]), alpha=float(d["lora_alpha"]),
               dropout=float(d.get("lora_dropout", 0.0)), targets=tuple(targets),
               use_rslora=bool(d.get("use_rslora", False)))


class LoRAAdapter(nnx.Module):
  """The low-rank update of one `Linear`: `scaling * (dropout(x) @ A) @ B`."""

  def __init__(self, base: Linear, config: LoraConfig, *, rngs: nnx.Rngs):
    bound = 1.0 / math.sqrt(base.in_features)  # PEFT: kaiming_uniform(a=sqrt(5)) on A
    init_a = nnx.initializers.uniform(2 * bound)
    a = param(init_a, rngs.params(), (base.in_features, config.rank), jnp.float32,
              (base.axes[0], "lora_rank"), cls=nnx.LoRAParam)
    a.set_value(a.get_value() - bound)
    self.lora_a = a
    self.lora_b = param(nnx.initializers.zeros_init(), None, (config.rank, base.out_features),
                        jnp.float32, ("lora_rank", base.axes[1]), cls=nnx.LoRAParam)
    self.scaling = config.scaling
    self.dtype = base.dtype
    if config.dropout > 0:
      self.dropout = nnx.Dropout(config.dropout, deterministic=True, rngs=rngs)
    else:
      self.dropout = None

  def __call__(self, x: jax.Array) -> jax.Array:
    if self.dropout is not None:
      x = self.dropout(x)
    h = matmul(x.astype(self.dtype), self.lora_a[...].astype(self.dtype))
    return matmul(h, self.lora_b[...].astype(self.dtype)) * self.scaling



def _targets(model: Transformer, names: Sequence[str]) -> Iterator[tuple[str, int | None, Linear]]:
  """(projection name, layer index or None, Linear) for every targeted projection."""
  for i, layer in enumerate(model.layers):
    for name in names:
      if name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        yield name, i, getattr(layer.self_attn, name)
      elif name in ("gate_proj", "up_proj", "down_proj"):
        yield name, i, getattr(layer.mlp, name)
  if "lm_head" in names:
    if model.lm_head is None:
      raise ValueError("lm_head is tied to the embeddings; it cannot carry a LoRA adapter")
    yield "lm_head", None, model.lm_head


def apply_lora(
    model: Transformer, config: LoraConfig, *, seed: int = 0, mesh: Mesh | None = None,
    rules: Sequence[tuple[str, Any]] = shd.DEFAULT_RULES,
) -> Transformer:
  """Adds fresh adapters (B = 0, so outputs are unchanged) in place; returns `model`.

  Enable LoRA dropout for training with `model.train()` (and `model.eval()` after).
  """
  rngs = nnx.Rngs(params=seed, dropout=seed + 1)
  for _, _, lin in _targets(model, config.targets):
    lin.lora = LoRAAdapter(lin, config, rngs=rngs)
  model.lora_config = config
  if mesh is not None:
    shd.shard_model(model, mesh, rules)
  return model


def remove_lora(model: Transformer) -> Transformer:
  for lin in _all_linears(model):
    lin.lora = None
  model.lora_config = None
  return model


def _all_linears(model: Transformer) -> Iterator[Linear]:
  for _, _, lin in _targets(model, ALL_TARGETS):
    yield lin
  if model.lm_head is not None:
    yield model.lm_head


def merge_lora(model: Transformer) -> Transformer:
  """Folds every adapter into its base kernel and removes the adapters (in place)."""
  for lin in _all_linears(model):
    if lin.lora is not None:
      ad = lin.lora
      delta = (ad.lora_a[...] @ ad.lora_b[...]) * ad.scaling
      lin.kernel.set_value(lin.kernel[...] + delta.astype(lin.kernel.dtype))
      lin.lora = None
  model.lora_config = None
  return model


def _peft_prefix(name: str, layer: int | None) -> str:
  if layer is None:
    return f"base_model.model.{name}"
  group = "self_attn" if name in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
  return f"base_model.model.model.layers.{layer}.{group}.{name}"


def export_lora_adapter(
    model: Transformer, path: str, config: LoraConfig | None = None,
    base_model_name_or_path: str = "",
) -> None:
  """Writes `adapter_config.json` + `adapter_model.safetensors` (PEFT layout, float32)."""
  from safetensors.numpy import save_file

  from automem.models.checkpoint import to_host

  config = config or getattr(model, "lora_config", None)
  if config is None:
    raise ValueError("model has no LoRA adapters (call apply_lora first)")
  tensors = {}
  for name, layer, lin in _targets(model, config.targets):
    if lin.lora is None:
      raise ValueError(f"{name} of layer {layer} has no adapter")
    prefix = _peft_prefix(name, layer)
    a = to_host(lin.lora.lora_a.get_value()).astype(np.float32)
    b = to_host(lin.lora.lora_b.get_value()).astype(np.float32)
    tensors[f"{prefix}.lora_A.weight"] = np.ascontiguousarray(a.T)
    tensors[f"{prefix}.lora_B.weight"] = np.ascontiguousarray(b.T)
  if jax.process_index() != 0:
    return
  os.makedirs(path, exist_ok=True)
  save_file(tensors, os.path.join(path, "adapter_model.safetensors"), metadata={"format": "pt"})
  with open(os.path.join(path, "adapter_config.json"), "w") as f:
    json.dump(config.to_peft_dict(base_model_name_or_path), f, indent=2)


def load_lora_adapter(
    model: Transformer, path: str, *, mesh: Mesh | None = None,
    rules: Sequence[tuple[str, Any]] = shd.DEFAULT_RULES,
) -> Transformer:
  """Adds the PEFT adapter in `path` to `model` (in place; replaces existing adapters)."""
  from automem.models.checkpoint import CheckpointError, SafetensorsFile

  with open(os.path.join(path, "adapter_config.json")) as f:
    config = LoraConfig.from_peft_dict(json.load(f))
  st_path = os.path.join(path, "adapter_model.safetensors")
  if not os.path.exists(st_path):
    raise CheckpointError(f"no adapter_model.safetensors in {path}")
  st = SafetensorsFile(st_path)
  remove_lora(model)
  apply_lora(model, config)
  problems = []
  for name, layer, lin in _targets(model, config.targets):
    prefix = _peft_prefix(name, layer)
    for key, var, transpose_shape in (
        (f"{prefix}.lora_A.weight", lin.lora.lora_a, None),
        (f"{prefix}.lora_B.weight", lin.lora.lora_b, None),
    ):
      del transpose_shape
      if key not in st.header:
        # Some exporters insert the adapter name: ...q_proj.lora_A.default.weight
        alt = key.replace(".weight", ".default.weight")
        if alt not in st.header:
          problems.append(f"missing {key}")
          continue
        key = alt
      arr = st.get(key).T
      if tuple(arr.shape) != tuple(var.shape):
        problems.append(f"{key}: shape {arr.shape[::-1]}, expected {tuple(var.shape)[::-1]}")
        continue
      var.set_value(jnp.asarray(np.asarray(arr, np.float32)))
  if problems:
    remove_lora(model)
    raise CheckpointError(f"cannot load adapter {path}:\n  " + "\n  ".join(problems))
  if mesh is not None:
    shd.shard_model(model, mesh, rules)
  return model


def lora_state(model: Transformer) -> nnx.State:
  """Just the adapter weights (e.g. to checkpoint or to swap adapters in an engine)."""
  return nnx.state(model, nnx.LoRAParam)
