"""LoRA setup and end-of-run export, through the models package's adapters and exporters.

* `kind="lora"`: a PEFT-layout adapter directory (`adapter_config.json` +
  `adapter_model.safetensors`) that SGLang / vLLM / peft load on the base model.
* `kind="merged"`: a full Hugging Face checkpoint with the adapters folded into
  the weights (or the fully fine-tuned weights), plus the base tokenizer files.

The exported weights come from float32 base weights re-read from the base
checkpoint (not the bfloat16 copy kept frozen during training), so a merge
loses nothing to the training-time storage dtype.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.experimental import multihost_utils

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "chat_template.jinja", "chat_template.json", "generation_config.json",
                    "vocab.json", "merges.txt")


def lora_config(cfg: Any) -> Any:
  """`automem.models.LoraConfig` from the `config.lora` block."""
  from automem.models.lora import LoraConfig

  return LoraConfig(rank=cfg.rank, alpha=cfg.alpha, targets=tuple(cfg.target_modules))


def add_lora(model: nnx.Module, cfg: Any, mesh: jax.sharding.Mesh | None) -> nnx.Module:
  """Adds LoRA adapters (float32, seeded) and places them on the mesh by their logical axes."""
  from automem.models.lora import apply_lora

  return apply_lora(model, lora_config(cfg), seed=cfg.seed, mesh=mesh)


def export_trained(config: Any, trainer: Any, params: Any, base_model: str, out_dir: str
                   ) -> str:
  """Writes the trained parameters as `config.export.kind` says; returns the written dir.

  Every process must call this (the parameters are gathered from all of them); process 0
  rebuilds the model on its host CPU in float32 and writes the files.
  """
  from automem.models.checkpoint import load_hf_checkpoint, save_hf_checkpoint
  from automem.models.sharding import make_mesh

  kind = config.export.kind
  if kind not in ("lora", "merged"):
    raise ValueError(f"export.kind must be 'lora', 'merged' or 'none', got {kind!r}")
  if kind == "lora" and config.finetune != "lora":
    raise ValueError("export.kind='lora' needs finetune='lora'; use 'merged' for full "
                     "fine-tuning")
  if jax.process_count() > 1:
    host = multihost_utils.process_allgather(params, tiled=True)
  else:
    host = jax.device_get(params)
  path = os.path.join(out_dir, "adapter" if kind == "lora" else "merged")
  if jax.process_index() != 0:
    return path
  cpu = jax.local_devices(backend="cpu")[:1]
  with jax.default_device(cpu[0]):
    mesh = make_mesh(1, 1, 1, devices=cpu)
    host = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), host)
    model = load_hf_checkpoint(base_model, mesh, dtype="float32", param_dtype="float32")
    if config.finetune == "lora":
      model = add_lora(model, config.lora, mesh)
      nnx.update(model, _lora_state(model, host))
    else:
      nnx.update(model, _param_state(model, host))
    if kind == "lora":
      from automem.models.lora import export_lora_adapter

      export_lora_adapter(model, path, lora_config(config.lora),
                          base_model_name_or_path=base_model)
      return path
    if config.finetune == "lora":
      from automem.models.lora import merge_lora

      model = merge_lora(model)
    save_hf_checkpoint(model, path)
  for name in _TOKENIZER_FILES:
    src = os.path.join(base_model, name)
    if os.path.exists(src) and not os.path.exists(os.path.join(path, name)):
      shutil.copy(src, path)
  return path


def _lora_state(model: nnx.Module, params: Any) -> nnx.State:
  state = nnx.state(model, nnx.LoRAParam)
  nnx.replace_by_pure_dict(state, params)
  return state


def _param_state(model: nnx.Module, params: Any) -> nnx.State:
  state = nnx.state(model, nnx.Param)
  nnx.replace_by_pure_dict(state, params)
  return state
