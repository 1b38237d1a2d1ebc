"""Model configuration read from (and written back to) a Hugging Face `config.json`."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax.numpy as jnp

_FAMILIES = ("qwen2", "qwen3")
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Static shape and numerics of a Qwen2/2.5/Qwen3 decoder.

  `dtype` is the compute dtype (activations, matmuls); `param_dtype` the dtype of the
  stored (master) weights. Logits are always float32.
  """

  family: str = "qwen2"  # "qwen2" (q/k/v bias) or "qwen3" (q/k RMSNorm, no bias)
  vocab_size: int = 1024
  hidden_size: int = 64
  intermediate_size: int = 128
  num_layers: int = 2
  num_heads: int = 4
  num_kv_heads: int = 2
  head_dim: int = 16
  rope_theta: float = 1_000_000.0
  rms_norm_eps: float = 1e-6
  tie_word_embeddings: bool = True
  attention_bias: bool | None = None  # q/k/v bias; None = family default (qwen2 yes, qwen3 no)
  max_position_embeddings: int = 32768
  bos_token_id: int | None = None
  eos_token_id: int | tuple[int, ...] | None = None  # lists become tuples (hashable)
  pad_token_id: int | None = None
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: bool = False  # rematerialise each decoder layer in the backward pass
  attention_chunk: int = 1024  # query block size for long sequences (0 = never split)

  def __post_init__(self):
    if isinstance(self.eos_token_id, list):
      object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id))
    if self.attention_bias is None:
      object.__setattr__(self, "attention_bias", self.family == "qwen2")
    if self.family not in _FAMILIES:
      raise ValueError(f"family must be one of {_FAMILIES}, got {self.family!r}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")

  @property
  def qk_norm(self) -> bool:
    return self.family == "qwen3"

  def replace(self, **kw: Any) -> ModelConfig:
    return dataclasses.replace(self, **kw)

  @classmethod
  def from_hf_dict(cls, d: dict[str, Any], **overrides: Any) -> ModelConfig:
    """Builds a config from the dict of a Hugging Face Qwen2/Qwen3 `config.json`."""
    model_type = d.get("model_type")
    if model_type not in _FAMILIES:
      raise ValueError(f"unsupported model_type {model_type!r}; expected one of {_FAMILIES}")
    rope = d.get("rope_parameters") or {}
    scaling = d.get("rope_scaling") or {}
    rope_type = rope.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if rope_type != "default":
      raise NotImplementedError(f"rope_type {rope_type!r} is not supported (only 'default')")
    if d.get("use_sliding_window"):
      raise NotImplementedError("sliding-window attention is not supported")
    theta = rope.get("rope_theta", d.get("rope_theta", 10000.0))
    num_heads = d["num_attention_heads"]
    head_dim = d.get("head_dim") or d["hidden_size"] // num_heads
    if model_type == "qwen2":
      bias = True
    else:
      bias = bool(d.get("attention_bias", False))
    kw = dict(
        family=model_type,
        vocab_size=d["vocab_size"],
        hidden_size=d["hidden_size"],
        intermediate_size=d["intermediate_size"],
        num_layers=d["num_hidden_layers"],
        num_heads=num_heads,
        num_kv_heads=d.get("num_key_value_heads") or num_heads,
        head_dim=head_dim,
        rope_theta=float(theta),
        rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
        tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
        attention_bias=bias,
        max_position_embeddings=int(d.get("max_position_embeddings", 32768)),
        bos_token_id=d.get("bos_token_id"),
        eos_token_id=d.get("eos_token_id"),
        pad_token_id=d.get("pad_token_id"),
    )
    if d.get("hidden_act", "silu") != "silu":
      raise NotImplementedError(f"hidden_act {d.get('hidden_act')!r} is not supported")
    kw.update(overrides)
    return cls(**kw)

  @classmethod
  def from_pretrained(cls, path: str, **overrides: Any) -> ModelConfig:
    """Reads `<path>/config.json` (a checkpoint directory) or a config file path."""
    f = os.path.join(path, "config.json") if os.path.isdir(path) else path
    if not os.path.exists(f):
      raise FileNotFoundError(f"no config.json at {f}")
    with open(f) as fh:
      return cls.from_hf_dict(json.load(fh), **overrides)

  def to_hf_dict(self) -> dict[str, Any]:
    """The `config.json` transformers needs to rebuild this model (weights in float32)."""
    arch = {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}[self.family]
    d: dict[str, Any] = {
        "architectures": [arch],
        "model_type": self.family,
        "vocab_size": self.vocab_size,
        "hidden_size": self.hidden_size,
        "intermediate_size": self.intermediate_size,
        "num_hidden_layers": self.num_layers,
        "num_attention_heads": self.num_heads,
        "num_key_value_heads": self.num_kv_heads,
        "head_dim": self.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": self.max_position_embeddings,
        "rms_norm_eps": self.rms_norm_eps,
        "rope_theta": self.rope_theta,
        "rope_parameters": {"rope_theta": self.rope_theta, "rope_type": "default"},
        "rope_scaling": None,
        "tie_word_embeddings": self.tie_word_embeddings,
        "use_sliding_window": False,
        "sliding_window": None,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "use_cache": True,
        "bos_token_id": self.bos_token_id,
        "eos_token_id": (list(self.eos_token_id) if isinstance(self.eos_token_id, tuple)
                         else self.eos_token_id),
        "pad_token_id": self.pad_token_id,
        "torch_dtype": "float32",
        "dtype": "float32",
    }
    if self.family == "qwen3":
      d["attention_bias"] = self.attention_bias
    elif self.hidden_size // self.num_heads != self.head_dim:
      raise ValueError("Qwen2 requires head_dim == hidden_size // num_heads")
    return d


def resolve_dtype(x: Any) -> Any:
  """Accepts a jnp dtype or its name ("float32", "bfloat16")."""
  if isinstance(x, str):
    if x not in _DTYPES:
      raise ValueError(f"unknown dtype {x!r}; expected one of {sorted(_DTYPES)}")
    return _DTYPES[x]
  return x
