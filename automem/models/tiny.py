"""A tiny offline model: locally trained byte-level BPE + Qwen weights, HF layout.

Nothing here downloads anything or imports torch. The corpus (`agent_chats`,
`tiny_corpus`; `automem.models.tiny_corpus`) is scripted episodes on the real
games, every request rendered as the memory agent renders it (each game's v0
structure, the envs' own observations and action names, commands of the real
language run on a real `MemoryStore`); only the completions are scripted. The
tokenizer is trained on it and cached on disk under a key derived from its
recipe (corpus version included), so every process builds it once;
`pretrain_tiny_model` teaches the model to answer those prompts.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import random
import shutil
import tempfile
import time
from typing import Any

import tokenizers
from absl import logging
from tokenizers import decoders, models, pre_tokenizers, trainers

from automem.models.config import ModelConfig
from automem.models.tiny_corpus import agent_chats
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

_RECIPE_VERSION = 2
# Bumped whenever the corpus changes, so cached pretrained tiny models are rebuilt.
CORPUS_VERSION = 8

_THINGS = ("grass", "tree", "water", "stone", "coal", "iron", "diamond", "sand", "lava", "table",
           "furnace", "plant", "zombie", "skeleton", "cow", "door", "wall", "fountain", "key",
           "staircase", "monster", "gold", "potion", "scroll", "wand", "ring", "dagger")
_DIRS = ("north", "south", "east", "west", "north-east", "south-west", "left", "right")
_STATS = ("health", "food", "drink", "energy", "wood", "stone", "coal", "iron", "sapling")
_WORDS = ("the", "a", "to", "of", "and", "is", "I", "you", "need", "should", "first", "then",
          "before", "after", "near", "far", "found", "collect", "craft", "avoid", "remember",
          "next", "time", "step", "goal", "because", "at", "night", "day", "it", "works",
          "failed", "success", "achievement", "unlocked", "progress", "level", "dungeon")


def _sentence(r: random.Random) -> str:
  kind = r.randrange(5)
  if kind == 0:
    return (f"You see {r.choice(_THINGS)} {r.randint(1, 9)} steps {r.choice(_DIRS)} and "
            f"{r.choice(_THINGS)} {r.randint(1, 9)} steps {r.choice(_DIRS)}.")
  if kind == 1:
    return ", ".join(f"{s}: {r.randint(0, 9)}" for s in r.sample(_STATS, 4))
  if kind == 2:
    return " ".join(r.choice(_WORDS) for _ in range(r.randint(5, 14))).capitalize() + "."
  if kind == 3:
    return f"Step {r.randint(0, 9999)}: {r.choice(_DIRS)} -> {r.choice(_THINGS)}"
  return f"Achievement unlocked: collect_{r.choice(_THINGS)}; you are facing {r.choice(_THINGS)}."


def tiny_corpus(num_docs: int = 3000, seed: int = 0) -> list[str]:
  """Generated text (deterministic): agent chats on real games rendered from the real
  structures, prompts, action names and command language (`agent_chats`), plus short notes."""
  r = random.Random(seed)
  docs = ["".join(s.text for s in segs) for segs, _ in agent_chats(max(1, num_docs // 25), seed)]
  for _ in range(num_docs - len(docs)):
    docs.append("\n".join(_sentence(r) for _ in range(r.randint(2, 6))))
  return docs


def _recipe(vocab_size: int) -> dict[str, Any]:
  return {"version": _RECIPE_VERSION, "corpus": CORPUS_VERSION, "vocab_size": vocab_size,
          "specials": SPECIAL_TOKENS,
          "commands": COMMAND_TOKENS, "template": QWEN_CHAT_TEMPLATE, "split": _QWEN_SPLIT}


def default_cache_dir() -> str:
  return os.environ.get("AUTOMEM_CACHE", os.path.join(os.path.expanduser("~"), ".cache",
                                                       "automem"))


def local_compile_cache() -> None:
  """Persists XLA compilations under `default_cache_dir()/jax_cache` (unless a cache is already
  set), so a rerun of a job on the local engine starts in seconds."""
  import jax

  if not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", os.path.join(default_cache_dir(), "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


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
  """A 2-layer, 64-wide config (fast on CPU).

  rope_theta is 100 (not Qwen's 10^4 or 10^6): pretraining sees 256-token windows, and the
  agent's prompts run to 4096 tokens; with every rotary frequency wrapping within the
  window, no relative position the model meets later is new to it (with 10^4 the tiny
  model's completions at 2500 tokens of context were noise).
  """
  base = dict(family=family, vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
              num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, rope_theta=100.0,
              tie_word_embeddings=True, max_position_embeddings=4096)
  base.update(kw)
  return ModelConfig(**base)


def _training_windows(tokenizer: Tokenizer, num_episodes: int, seed: int, head: int,
                      middle: int, tail: int, weights: tuple[float, float, float],
                      max_position: int, chunk: int = 32) -> tuple[Any, Any, Any, Any]:
  """(tokens, loss weights, positions, segment ids), one row per assistant completion of
  `agent_chats`.

  A row is the chat's first tokens (up to `head`, at most through the action list), then
  `middle // chunk` chunks from random places between, then the `tail` tokens that end with
  the completion, each token at its true position in the chat: the model learns to answer
  with the whole prompt's layout in view -- which game's actions are offered (at the top
  of a 1200-2500-token prompt), text from anywhere in between (the agent's prompts hold
  earlier turns it must not continue), and the step's text just before -- at a fraction
  of the cost of full-length rows. Where a row jumps ahead, the next-token target is not
  the chat's, so it carries no weight. Completions past `max_position` (the model's
  positions) make no row. Rows are padded at the end (segment 0).
  """
  import numpy as np

  rng = np.random.default_rng(seed)
  width = head + middle + tail
  rows_t, rows_w, rows_p, rows_s = [], [], [], []
  for segs, head_chars in agent_chats(num_episodes=num_episodes, seed=seed):
    ids: list[int] = []
    weight: list[float] = []
    ends: list[int] = []
    text_len, head_ids = 0, None
    for seg in segs:
      piece = tokenizer.encode(seg.text)
      if head_ids is None and text_len + len(seg.text) >= head_chars:
        # Token count of the text up to the end of the action list (within this segment).
        head_ids = len(ids) + len(tokenizer.encode(seg.text[:head_chars - text_len]))
      text_len += len(seg.text)
      kind = (2 if seg.text.startswith("<|ACTION|>") else 1) if seg.completion else 0
      # A refused name is context for the recovery after it, never a target.
      weight += [0.0 if seg.refused else weights[kind]] * len(piece)
      if seg.completion and not seg.refused and len(ids) + len(piece) <= max_position:
        ends.append(len(ids) + len(piece))
      ids += piece
    toks, wts = np.asarray(ids, np.int32), np.asarray(weight, np.float32)
    h = min(head, head_ids or head)
    for end in ends:
      start = max(h, end - tail)
      pieces = [np.arange(h)]
      n = min(middle // chunk, (start - h) // chunk)
      if n > 0:  # one chunk at a random place in each of n equal stretches between
        bounds = np.linspace(h, start - chunk, n + 1).astype(int)
        for lo, hi in itertools.pairwise(bounds):
          c = int(rng.integers(lo, max(lo + 1, hi - chunk + 1)))
          pieces.append(np.arange(c, c + chunk))
      pieces.append(np.arange(start, end))
      idx = np.unique(np.concatenate(pieces))[-width:]
      w = wts[idx].copy()
      w[1:][np.diff(idx) != 1] = 0.0  # a token after a jump is not the next one
      pad = width - len(idx)
      rows_t.append(np.pad(toks[idx], (0, pad)))
      rows_w.append(np.pad(w, (0, pad)))
      rows_p.append(np.pad(idx.astype(np.int32), (0, pad), mode="edge"))
      rows_s.append(np.pad(np.ones(len(idx), np.int32), (0, pad)))
  if not rows_t:
    raise ValueError(f"no training rows from {num_episodes} episodes (num_episodes must be >= 1)")
  return np.stack(rows_t), np.stack(rows_w), np.stack(rows_p), np.stack(rows_s)


def pretrain_tiny_model(
    model: Any, tokenizer: Tokenizer, steps: int, *, batch_size: int = 16, head: int = 128,
    middle: int = 128, tail: int = 256, learning_rate: float = 3e-3, seed: int = 0, prompt_weight: float = 0.5,
    completion_weight: float = 5.0, action_weight: float = 30.0, num_episodes: int = 480,
) -> float:
  """Trains `model` in place for `steps` AdamW steps of next-token loss on `agent_chats`.

  Every row ends at the end of an assistant completion (a LOG turn's commands and DONE, a
  PLAN turn's lookup or ACTION with one of the offered action names, then `<|im_end|>`) and
  keeps the chat's head in view (see `_training_windows`). Tokens are weighed by kind:
  prompt text `prompt_weight`, completions `completion_weight`, and a PLAN turn's ACTION
  (the decision the embedded run is scored on) `action_weight`. With the embedded default
  (`llm.local`: 128 wide, 800 steps) the model answers most PLAN prompts with `<|ACTION|>`
  and one of the offered names, and recovers from a refused name on the next turn (the
  README gives the measured fallback rate). Returns the final (weighted) loss.
  """
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from flax import nnx

  toks_all, w_all, pos_all, seg_all = _training_windows(
      tokenizer, num_episodes, seed + 1, head, middle, tail,
      (prompt_weight, completion_weight, action_weight), model.config.max_position_embeddings)
  sched = optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(1, steps // 10), steps)
  opt = nnx.Optimizer(model, optax.adamw(sched, weight_decay=0.01), wrt=nnx.Param)

  def loss_fn(m, toks, w, pos, seg):
    logits, _ = m(toks, pos, seg)
    logp = jax.nn.log_softmax(logits[:, :-1], -1)
    nll = -jnp.take_along_axis(logp, toks[:, 1:, None], -1)[..., 0]
    return jnp.sum(nll * w[:, 1:]) / jnp.sum(w[:, 1:])

  @nnx.jit
  def train_step(m, o, toks, w, pos, seg):
    loss, grads = nnx.value_and_grad(loss_fn)(m, toks, w, pos, seg)
    o.update(m, grads)
    return loss

  rng = np.random.default_rng(seed)
  loss = float("nan")
  start = time.monotonic()
  for step in range(1, steps + 1):
    rows = rng.integers(0, len(toks_all), batch_size)
    loss = train_step(model, opt, jnp.asarray(toks_all[rows]), jnp.asarray(w_all[rows]),
                      jnp.asarray(pos_all[rows]), jnp.asarray(seg_all[rows]))
    if step % 100 == 0 or step == steps:  # a long silent build looks hung: say where it is
      logging.info("tiny model pretraining: step %d/%d, loss %.3f, %.0f s", step, steps,
                   float(loss), time.monotonic() - start)
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
  random unless `pretrain_steps > 0` (see `pretrain_tiny_model`; the embedded default trains
  a 128-wide model for 800 steps).
  Random weights are deterministic for a given (family, seed, config); the corpus also
  depends on the installed game packages (crafter, nle, minihack), and pretraining on XLA
  CPU is not bit-reproducible across processes (close, not equal). Returns `path`.
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
