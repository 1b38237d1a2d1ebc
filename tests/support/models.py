"""Shared session fixtures: tiny Qwen checkpoints, tokenizer, model and engine.

Load as a pytest plugin (`pytest_plugins = ["tests.support.models"]`) or import the
fixtures in a conftest. Everything is built once per session on CPU in a few seconds.

- `tiny_tokenizer`: the offline byte-level BPE tokenizer (cached on disk by recipe).
- `tiny_checkpoint_dir`: `make_tiny_checkpoint` output (qwen2 family, no torch needed).
- `tiny_model`, `tiny_engine`: that checkpoint loaded, and a GenerationEngine on it.
- `hf_qwen2_dir`, `hf_qwen3_dir`: tiny random checkpoints written by transformers'
  `save_pretrained` (torch), with perturbed norms and biases so every weight matters.
"""

from __future__ import annotations

import os

import pytest
from flax import nnx

from automem.models import generate as gen_lib
from automem.models import tiny as tiny_lib
from automem.models.checkpoint import load_hf_checkpoint
from automem.models.tokenizer import Tokenizer

HF_QWEN2 = dict(vocab_size=1024, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0,
                rms_norm_eps=1e-6, tie_word_embeddings=False, max_position_embeddings=512)
HF_QWEN3 = dict(vocab_size=1024, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=1, head_dim=32, rope_theta=1e6,
                rms_norm_eps=1e-5, tie_word_embeddings=True, max_position_embeddings=512)


def write_hf_checkpoint(path: str, family: str, seed: int = 0, **overrides) -> str:
  """A tiny random transformers (PyTorch) Qwen model saved with `save_pretrained`."""
  import torch
  import transformers

  torch.manual_seed(seed)
  kw = dict(HF_QWEN2 if family == "qwen2" else HF_QWEN3)
  kw.update(overrides)
  tok = tiny_lib.tiny_tokenizer(kw["vocab_size"])
  eos = tok.eos_token_ids
  if family == "qwen2":
    cfg = transformers.Qwen2Config(**kw, eos_token_id=eos, pad_token_id=tok.pad_token_id)
    model = transformers.Qwen2ForCausalLM(cfg)
  else:
    cfg = transformers.Qwen3Config(**kw, eos_token_id=eos, pad_token_id=tok.pad_token_id)
    model = transformers.Qwen3ForCausalLM(cfg)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name:
        p.add_(0.1 * torch.randn_like(p))
      elif name.endswith("bias"):
        p.add_(0.05 * torch.randn_like(p))
  model.save_pretrained(path)
  tok.save(path)
  return path


@pytest.fixture(scope="session")
def tiny_tokenizer() -> Tokenizer:
  return tiny_lib.tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_checkpoint_dir(tmp_path_factory) -> str:
  path = str(tmp_path_factory.mktemp("tiny_qwen2"))
  return tiny_lib.make_tiny_checkpoint(path, "qwen2")


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint_dir):
  return load_hf_checkpoint(tiny_checkpoint_dir)


@pytest.fixture(scope="session")
def tiny_engine(tiny_model, tiny_checkpoint_dir):
  tok = Tokenizer.from_pretrained(tiny_checkpoint_dir)
  return gen_lib.GenerationEngine(tiny_model, tok, max_batch_size=8, min_batch_bucket=4,
                                  min_prompt_bucket=32,
                                  decode_chunk=8)


@pytest.fixture(scope="session")
def hf_qwen2_dir(tmp_path_factory) -> str:
  return write_hf_checkpoint(str(tmp_path_factory.mktemp("hf_qwen2")), "qwen2", seed=1)


@pytest.fixture(scope="session")
def hf_qwen3_dir(tmp_path_factory) -> str:
  return write_hf_checkpoint(str(tmp_path_factory.mktemp("hf_qwen3")), "qwen3", seed=2)


@nnx.jit
def forward(model, tokens, positions, segment_ids):
  """Jitted `model(tokens, positions, segment_ids)[0]` (one compile per shape, shared)."""
  return model(tokens, positions, segment_ids)[0]


def torch_model(path: str):
  """The transformers model in `path`, fp32, eval mode (sdpa-free "eager" attention)."""
  import transformers

  m = transformers.AutoModelForCausalLM.from_pretrained(
      path, dtype="float32", attn_implementation="eager", local_files_only=True)
  return m.eval()


__all__ = [
    "forward", "hf_qwen2_dir", "hf_qwen3_dir", "tiny_checkpoint_dir", "tiny_engine", "tiny_model",
    "tiny_tokenizer", "torch_model", "write_hf_checkpoint",
]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
