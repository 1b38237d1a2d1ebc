"""Flax NNX Qwen2/2.5/Qwen3 models, HF checkpoint interop, LoRA, tokenizer, generation.

Public surface (see DESIGN.md "Models" contract):

- `ModelConfig` (`ModelConfig.from_pretrained(dir)` reads an HF config.json).
- `Transformer(config, rngs=...)`:
  `model(tokens[B,T], positions[B,T], segment_ids[B,T], cache=None) -> (logits f32 [B,T,V], cache)`;
  segment 0 = padding, attention is causal within equal nonzero segment ids.
  Extra keyword `return_hidden=True` returns the final hidden states instead of logits
  (`model.logits_from_hidden(h)` projects them) for chunked losses. `KVCache.init(...)`
  makes a cache; `default_positions(segment_ids)` gives per-segment positions.
- `load_hf_checkpoint(dir, mesh=None, dtype=..., param_dtype=..., remat=...)`,
  `save_hf_checkpoint(model, dir)`, `CheckpointError`.
- `LoraConfig`, `apply_lora(model, cfg)`, `export_lora_adapter(model, dir)` (PEFT layout),
  `load_lora_adapter`, `merge_lora`, `remove_lora`, `lora_state`. Adapter weights are
  `nnx.LoRAParam`: train them with `nnx.DiffState(0, nnx.LoRAParam)`.
- `Tokenizer.from_pretrained(dir)` with `apply_chat_template(messages, add_generation_prompt=True)
  -> list[int]`, `encode`, `decode`, `eos_token_ids`, `pad_token_id`.
- `make_tiny_checkpoint(dir, family="qwen2"|"qwen3", ...)`, `tiny_tokenizer()`, `tiny_config()`.
- `GenerationEngine(model, tokenizer, ...)`, `.generate(prompts, params) -> [GenerationOutput]`,
  `SamplingParams`, `GenerationOutput`, `.num_forward_passes`, `.update_weights(model)`.
  Extensions beyond the contract: `SamplingParams.ignore_eos`, `SamplingParams.adapter` with
  `engine.add_adapter(name, peft_dir_or_lora_model)` (named LoRA adapters per request over
  shared base weights), `GenerationOutput.stop_reason`; `token_ids` ends with the EOS id when
  one was sampled, `text` never contains EOS or the matched stop string.
- `make_tiny_checkpoint(..., pretrain_steps=N)` trains the tiny model for N steps on scripted
  agent chats on the real games (`tiny_corpus`) so it answers with well-formed memory commands
  and offered action names (default 0: random).
- Sharding: `make_mesh(data, fsdp, tensor)`, `shard_model(model, mesh)`, `DEFAULT_RULES`
  (logical axis -> mesh axis); activations get constraints under `with jax.set_mesh(mesh)`.

Example::

  path = make_tiny_checkpoint("/tmp/tiny", "qwen2")            # or any Qwen2/2.5/3 HF dir
  model = load_hf_checkpoint(path, mesh=make_mesh(fsdp=-1))     # sharded over all devices
  tok = Tokenizer.from_pretrained(path)
  engine = GenerationEngine(model, tok)
  prompt = tok.apply_chat_template([{"role": "user", "content": "You see a tree."}])
  out = engine.generate([prompt], [SamplingParams(temperature=0.7, max_new_tokens=64,
                                                  stop=("<|END|>",), seed=0)])[0]
  print(out.text, out.finish_reason)
"""

from automem.models.checkpoint import CheckpointError, load_hf_checkpoint, save_hf_checkpoint
from automem.models.config import ModelConfig
from automem.models.generate import GenerationEngine, GenerationOutput, SamplingParams
from automem.models.lora import (
    LoraConfig,
    apply_lora,
    export_lora_adapter,
    load_lora_adapter,
    lora_state,
    merge_lora,
    remove_lora,
)
from automem.models.sharding import DEFAULT_RULES, make_mesh, mesh_from_config, shard_model
from automem.models.tiny import make_tiny_checkpoint, tiny_config, tiny_tokenizer
from automem.models.tokenizer import Tokenizer
from automem.models.transformer import KVCache, Transformer, default_positions, init_model

__all__ = [
    "DEFAULT_RULES",
    "CheckpointError",
    "GenerationEngine",
    "GenerationOutput",
    "KVCache",
    "LoraConfig",
    "ModelConfig",
    "SamplingParams",
    "Tokenizer",
    "Transformer",
    "apply_lora",
    "default_positions",
    "export_lora_adapter",
    "init_model",
    "load_hf_checkpoint",
    "load_lora_adapter",
    "lora_state",
    "make_mesh",
    "make_tiny_checkpoint",
    "merge_lora",
    "mesh_from_config",
    "remove_lora",
    "save_hf_checkpoint",
    "shard_model",
    "tiny_config",
    "tiny_tokenizer",
]
