"""A tiny offline model: locally trained byte-level BPE + random Qwen weights, HF layout.

Nothing here downloads anything or imports torch. The tokenizer is trained with
`tokenizers` on generated game and memory-command text and cached on disk under a
key derived from its recipe, so every process builds it once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import tempfile
from typing import Any

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from automem.models.config import ModelConfig
from automem.models.tokenizer import Tokenizer

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
MEMORY_OPS = ("SEARCH", "READ", "TAIL", "COUNT", "APPEND", "WRITE", "CREATE", "EDIT", "DELETE",
              "UPSERT", "DONE", "ACTION", "END")
COMMAND_TOKENS = tuple(f"<|{op}|>" for op in MEMORY_OPS)

QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Qwen2's pre-tokenizer split pattern (contractions, letters, single digits, punctuation, spaces).
_QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

_RECIPE_VERSION = 1

_ACTIONS = ("noop", "move_left", "move_right", "move_up", "move_down", "do", "sleep",
            "place_stone", "place_table", "place_furnace", "place_plant", "make_wood_pickaxe",
            "make_stone_pickaxe", "make_iron_pickaxe", "make_wood_sword", "make_stone_sword",
            "make_iron_sword", "north", "south", "east", "west", "search", "pickup", "eat",
            "open", "kick", "apply", "wield", "wear")
_THINGS = ("grass", "tree", "water", "stone", "coal", "iron", "diamond", "sand", "lava", "table",
           "furnace", "plant", "zombie", "skeleton", "cow", "door", "wall", "fountain", "key",
           "staircase", "monster", "gold", "potion", "scroll", "wand", "ring", "dagger")
_DIRS = ("north", "south", "east", "west", "north-east", "south-west", "left", "right")
_FILES = ("notes.md", "plan.md", "map.md", "skills.md", "inventory.md", "lessons.md",
          "goals.md", "log.md")
_STATS = ("health", "food", "drink", "energy", "wood", "stone", "coal", "iron", "sapling")
_WORDS = ("the", "a", "to", "of", "and", "is", "I", "you", "need", "should", "first", "then",
          "before", "after", "near", "far", "found", "collect", "craft", "avoid", "remember",
          "next", "time", "step", "goal", "because", "at", "night", "day", "it", "works",
          "failed", "success", "achievement", "unlocked", "progress", "level", "dungeon")


def _sentence(r: random.Random) -> str:
  kind = r.randrange(6)
  if kind == 0:
    return (f"You see {r.choice(_THINGS)} {r.randint(1, 9)} steps {r.choice(_DIRS)} and "
            f"{r.choice(_THINGS)} {r.randint(1, 9)} steps {r.choice(_DIRS)}.")
  if kind == 1:
    return ", ".join(f"{s}: {r.randint(0, 9)}" for s in r.sample(_STATS, 4))
  if kind == 2:
    return f"Action: {r.choice(_ACTIONS)}. Reward {r.choice(['0.0', '1.0', '-0.1'])}."
  if kind == 3:
    return " ".join(r.choice(_WORDS) for _ in range(r.randint(5, 14))).capitalize() + "."
  if kind == 4:
    return f"Step {r.randint(0, 9999)}: {r.choice(_ACTIONS)} -> {r.choice(_THINGS)}"
  return f"Achievement unlocked: collect_{r.choice(_THINGS)}; you are facing {r.choice(_THINGS)}."


def _command(r: random.Random) -> str:
  op = r.choice(MEMORY_OPS[:-1])
  f = r.choice(_FILES)
  if op in ("READ", "TAIL", "COUNT", "DELETE", "CREATE"):
    return f"<|{op}|>{f}<|END|>"
  if op == "SEARCH":
    return f"<|SEARCH|>{r.choice(_THINGS)}<|END|>"
  if op == "DONE":
    return "<|DONE|><|END|>"
  if op == "ACTION":
    return f"<|ACTION|>{r.choice(_ACTIONS)}<|END|>"
  if op == "EDIT":
    return f"<|EDIT|>{f}|{_sentence(r)}|{_sentence(r)}<|END|>"
  if op == "UPSERT":
    return f"<|UPSERT|>{f}|{r.choice(_THINGS)}|{_sentence(r)}<|END|>"
  return f"<|{op}|>{f}|{_sentence(r)}<|END|>"


def tiny_corpus(num_docs: int = 3000, seed: int = 0) -> list[str]:
  """Generated game observations, chat turns and memory commands (deterministic)."""
  r = random.Random(seed)
  docs = []
  for _ in range(num_docs):
    parts = []
    for _ in range(r.randint(2, 6)):
      parts.append(_command(r) if r.random() < 0.4 else _sentence(r))
    body = "\n".join(parts)
    if r.random() < 0.5:
      body = (f"<|im_start|>system\nYou play a game and keep notes.<|im_end|>\n<|im_start|>user\n"
              f"{body}<|im_end|>\n<|im_start|>assistant\n{_command(r)}<|im_end|>\n")
    docs.append(body)
  return docs


def _recipe(vocab_size: int) -> dict[str, Any]:
  return {"version": _RECIPE_VERSION, "vocab_size": vocab_size, "specials": SPECIAL_TOKENS,
          "commands": COMMAND_TOKENS, "template": QWEN_CHAT_TEMPLATE, "split": _QWEN_SPLIT}


def default_cache_dir() -> str:
  return os.environ.get("AUTOMEM_CACHE", os.path.join(os.path.expanduser("~"), ".cache",
                                                       "automem"))


def train_tiny_tokenizer(vocab_size: int = 1024) -> Tokenizer:
  """Trains the byte-level BPE (about a second) with Qwen-style special tokens."""
  tok = tokenizers.Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(tokenizers.Regex(_QWEN_SPLIT), behavior="isolated"),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
  ])
  tok.decoder = decoders.ByteLevel()
  tok.add_special_tokens(list(SPECIAL_TOKENS))
  # Command markers are ordinary (non-special) added tokens: one id each, kept on decode.
  tok.add_tokens([tokenizers.AddedToken(t, normalized=False, special=False)
                  for t in COMMAND_TOKENS])
  n_added = len(SPECIAL_TOKENS) + len(COMMAND_TOKENS)
  trainer = trainers.BpeTrainer(
      vocab_size=vocab_size - n_added, special_tokens=[], show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=2)
  tok.train_from_iterator(tiny_corpus(), trainer=trainer)
  specials = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "bos_token": None,
              "unk_token": None}
  return Tokenizer(tok, QWEN_CHAT_TEMPLATE, specials,
                   extra_eos_ids=[tok.token_to_id("<|endoftext|>")])


def tiny_tokenizer_dir(vocab_size: int = 1024, cache_dir: str | None = None) -> str:
  """Directory holding the tiny tokenizer, trained once and cached by its recipe's hash."""
  key = hashlib.sha256(json.dumps(_recipe(vocab_size), sort_keys=True).encode()).hexdigest()[:16]
  root = os.path.join(cache_dir or default_cache_dir(), "tokenizers")
  path = os.path.join(root, f"tiny-bpe-{vocab_size}-{key}")
  if not os.path.exists(os.path.join(path, "tokenizer.json")):
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=root)
    try:
      train_tiny_tokenizer(vocab_size).save(tmp)
      with contextlib.suppress(OSError):  # atomic; another process may have won the race
        os.rename(tmp, path)
    finally:
      shutil.rmtree(tmp, ignore_errors=True)
  return path


def tiny_tokenizer(vocab_size: int = 1024, cache_dir: str | None = None) -> Tokenizer:
  """The tiny tokenizer (see `tiny_tokenizer_dir`)."""
  return Tokenizer.from_pretrained(tiny_tokenizer_dir(vocab_size, cache_dir))


def tiny_config(family: str = "qwen2", vocab_size: int = 1024, **kw: Any) -> ModelConfig:
  """A 2-layer, 64-wide config (fast on CPU)."""
  base = dict(family=family, vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
              num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, rope_theta=10000.0,
              tie_word_embeddings=True, max_position_embeddings=4096)
  base.update(kw)
  return ModelConfig(**base)


def pretrain_tiny_model(
    model: Any, tokenizer: Tokenizer, steps: int, *, batch_size: int = 16, seq_len: int = 128,
    learning_rate: float = 3e-3, seed: int = 0,
) -> float:
  """Trains `model` in place for `steps` AdamW steps on `tiny_corpus` (next-token loss).

  A few hundred steps make the tiny model emit well-formed memory commands followed by
  `<|im_end|>` after an assistant prompt, instead of random bytes, so offline end-to-end
  runs exercise real command parsing and stop quickly (300 steps: loss ~1.25, about
  3 minutes on a busy 2-core CPU; cache the resulting checkpoint). Returns the final loss.
  """
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from flax import nnx

  eos = tokenizer.token_to_id("<|endoftext|>")
  stream: list[int] = []
  for doc in tiny_corpus(num_docs=4000, seed=seed + 1):
    stream += [*tokenizer.encode(doc), eos]
  n = len(stream) // seq_len
  data = np.asarray(stream[: n * seq_len], np.int32).reshape(n, seq_len)
  pos = jnp.broadcast_to(jnp.arange(seq_len, dtype=jnp.int32), (batch_size, seq_len))
  seg = jnp.ones((batch_size, seq_len), jnp.int32)
  sched = optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(1, steps // 10), steps)
  opt = nnx.Optimizer(model, optax.adamw(sched, weight_decay=0.01), wrt=nnx.Param)

  def loss_fn(m, toks):
    logits, _ = m(toks, pos, seg)
    logp = jax.nn.log_softmax(logits[:, :-1], -1)
    return -jnp.mean(jnp.take_along_axis(logp, toks[:, 1:, None], -1))

  @nnx.jit
  def train_step(m, o, toks):
    loss, grads = nnx.value_and_grad(loss_fn)(m, toks)
    o.update(m, grads)
    return loss

  rng = np.random.default_rng(seed)
  loss = float("nan")
  for _ in range(steps):
    loss = train_step(model, opt, jnp.asarray(data[rng.integers(0, n, batch_size)]))
  return float(loss)


def make_tiny_checkpoint(
    path: str,
    family: str = "qwen2",
    *,
    seed: int = 0,
    vocab_size: int = 1024,
    cache_dir: str | None = None,
    pretrain_steps: int = 0,
    **config_kw: Any,
) -> str:
  """Writes a tiny HF-format model + tiny tokenizer + chat template to `path`.

  Loadable by `load_hf_checkpoint`/`Tokenizer.from_pretrained` and by transformers.
  `config_kw` overrides fields of `tiny_config` (hidden_size, num_layers, ...). Weights are
  random unless `pretrain_steps > 0` (see `pretrain_tiny_model`; ~300 steps suffice).
  Deterministic for a given (family, seed, config, pretrain_steps).
  Returns `path`.
  """
  from automem.models.checkpoint import save_hf_checkpoint
  from automem.models.transformer import init_model

  tok = tiny_tokenizer(vocab_size, cache_dir)
  if tok.vocab_size > vocab_size:
    raise ValueError(f"tokenizer has {tok.vocab_size} tokens > vocab_size {vocab_size}")
  eos = sorted({*tok.eos_token_ids, tok.token_to_id("<|endoftext|>")})
  config = tiny_config(family, vocab_size, eos_token_id=eos, pad_token_id=tok.pad_token_id,
                       bos_token_id=None, **config_kw)
  model = init_model(config, seed)
  if pretrain_steps > 0:
    pretrain_tiny_model(model, tok, pretrain_steps, seed=seed)
  save_hf_checkpoint(model, path)
  tok.save(path)
  return path
