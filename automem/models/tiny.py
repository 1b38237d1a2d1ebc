"""A tiny offline model: locally trained byte-level BPE + Qwen weights, HF layout.

Nothing here downloads anything or imports torch. The corpus (`agent_chats`,
`tiny_corpus`) is generated from the project's real parts: each game's v0
MemoryStructure renders the system, LOG and PLAN prompts; completions are
commands of the real language (`render_command`, arguments the parser
requires) run on a real `MemoryStore`, whose results feed the follow-up
prompts; PLAN turns commit the env's real action names. The tokenizer is
trained on it and cached on disk under a key derived from its recipe (corpus
version included), so every process builds it once; `pretrain_tiny_model`
teaches the model to answer those prompts.
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

_RECIPE_VERSION = 2
# Bumped whenever the corpus changes, so cached pretrained tiny models are rebuilt.
CORPUS_VERSION = 5

_THINGS = ("grass", "tree", "water", "stone", "coal", "iron", "diamond", "sand", "lava", "table",
           "furnace", "plant", "zombie", "skeleton", "cow", "door", "wall", "fountain", "key",
           "staircase", "monster", "gold", "potion", "scroll", "wand", "ring", "dagger")
_DIRS = ("north", "south", "east", "west", "north-east", "south-west", "left", "right")
_STATS = ("health", "food", "drink", "energy", "wood", "stone", "coal", "iron", "sapling")
_WORDS = ("the", "a", "to", "of", "and", "is", "I", "you", "need", "should", "first", "then",
          "before", "after", "near", "far", "found", "collect", "craft", "avoid", "remember",
          "next", "time", "step", "goal", "because", "at", "night", "day", "it", "works",
          "failed", "success", "achievement", "unlocked", "progress", "level", "dungeon")
_NLE_THINGS = ("a jackal", "a newt", "a grid bug", "a doorway", "a staircase down", "a fountain",
               "a dark part of a room", "a wall", "a corridor", "a boulder", "a lichen", "gold")
_NLE_MOVES = ("north", "east", "south", "west", "northeast", "southeast", "southwest",
              "northwest")
_COMMON_ACTIONS = ("move west", "move east", "move north", "move south", "do", *_NLE_MOVES)
# What the embedded CPU run puts in place of the game rules (see experiments/configs).
_SHORT_RULES = "(left out of the embedded CPU run to fit the tiny model's context)"


def _game_actions(game: str) -> tuple[str, ...]:
  """The names the env accepts (the ones offered in prompts); movement for MiniHack."""
  if game == "crafter":
    from automem.envs.crafter_text import ACTION_NAMES

    return ACTION_NAMES
  from automem.envs.nle_actions import NAMED_ACTIONS

  return tuple(NAMED_ACTIONS) if game == "nethack" else tuple(
      n for n in NAMED_ACTIONS if n.split()[-1] in _NLE_MOVES)


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


def _observation(r: random.Random, game: str) -> str:
  """Observation-like text in the style of the game's renderer (not a real state)."""
  if game == "crafter":
    near = [f"- {r.choice(_THINGS[:12])}: {r.randint(1, 4)} step{'s' if r.random() < .8 else ''} "
            f"{r.choice(_DIRS[:4])}" for _ in range(r.randint(2, 6))]
    vit = ", ".join(f"{s} {r.randint(1, 9)}/9" for s in ("health", "food", "drink", "energy"))
    inv = ", ".join(f"{s} {r.randint(1, 5)}" for s in r.sample(_STATS[4:], r.randint(0, 3)))
    return (f"You face {r.choice(_THINGS[:12])} to the {r.choice(_DIRS[:4])}.\nNearby:\n"
            + "\n".join(near) + f"\nStatus: {vit}\nInventory: {inv or 'nothing'}\n"
            + r.choice(("It is day.", "It is getting dark.", "It is night.")))
  rows = ["".join(r.choice(" .#-|") for _ in range(12)) for _ in range(r.randint(3, 6))]
  row = r.randrange(len(rows))
  rows[row] = rows[row][:5] + "@" + rows[row][6:]
  near = [f"{r.choice(_NLE_THINGS)}: {r.randint(1, 6)} steps {r.choice(_NLE_MOVES)}"
          for _ in range(r.randint(1, 4))]
  message = r.choice(("", "You hear a door open.", "It is a wall.", "You see here gold."))
  return (f"message: {message}"
          f"\nmap (you are the @ at x={r.randint(1, 70)}, y={r.randint(1, 20)}):\n"
          + "\n".join(rows) + "\nnearby: " + "; ".join(near)
          + f"\nHP:{r.randint(1, 14)}({r.randint(14, 16)}) Dlvl:{r.randint(1, 3)} "
          f"T:{r.randint(1, 900)} Hunger: {r.choice(('not hungry', 'hungry'))}")


def _note(r: random.Random, step: int, action: str) -> str:
  return r.choice((f"Step {step} '{action}': {r.choice(('moved', 'blocked', 'nothing'))}",
                   f"{r.choice(_THINGS)} {r.choice(_DIRS[:4])} of {r.choice(_THINGS)}",
                   f"need {r.choice(_THINGS)}"))


def _log_command(r: random.Random, files: list[str], step: int, action: str) -> str:
  """One LOG-phase command of the real language (valid arguments, existing files)."""
  from automem.memory import render_command

  f, kind = r.choice(files), r.randrange(10)
  if kind < 5:
    return render_command("APPEND", f, _note(r, step, action))
  if kind < 7:
    return render_command("SEARCH", r.choice([f, "*"]), r.choice(_THINGS + _NLE_MOVES))
  if kind == 7:
    return render_command("TAIL", f, str(r.randint(1, 5)))
  if kind == 8:
    return render_command("COUNT", f)
  return render_command("READ", f)


def _plan_lookup(r: random.Random, files: list[str]) -> str:
  from automem.memory import render_command

  return render_command(r.choice(("SEARCH", "SEARCH", "TAIL", "COUNT")), r.choice(files),
                        r.choice(_THINGS + _NLE_MOVES))


def _agent_steps(r: random.Random, game: str, root: str,
                 n_steps: int) -> list[list[tuple[str, bool]]]:
  """Chats of one synthetic episode in the agent's layout: per env step, a list of
  `(text, is_completion)` segments, rendered with the game's real v0 structure, its real
  prompts and action names, and commands run on a real memory store (results included)."""
  from automem.memory import MemoryStore, execute, format_results, load_structure, parse_commands

  structure = load_structure(game)
  task = {"minihack": "MiniHack-Corridor-R3-v0", "nethack": "NetHackChallenge-v0"}.get(game, game)
  if r.random() < 0.7:
    structure = structure.revise({"game_rules": _SHORT_RULES}, "embedded run")
  actions = _game_actions(game)
  common = [a for a in actions if a.lower() in _COMMON_ACTIONS]
  store = MemoryStore.from_structure(root, structure)
  store.reset()
  log_sys = structure.system_prompt("log", actions=actions, task=task)
  plan_sys = structure.system_prompt("plan", actions=actions, task=task)
  system = f"{log_sys}\n\n=== In the PLAN phase ===\n{plan_sys[plan_sys.find('THIS IS THE PLAN'):]}"
  history: list[str] = []
  last_action, last_outcome = "(none)", "(none)"
  out = []

  def index() -> str:
    return "\n".join(f"- {f.name}: {f.description}" if f.description else f"- {f.name}"
                     for f in store.index())

  def run(phase: str, text: str) -> str:
    return format_results(execute(store, parse_commands(text), phase=phase, structure=structure))

  for step in range(n_steps):
    obs = _observation(r, game)
    segs: list[tuple[str, bool]] = [(f"<|im_start|>system\n{system}<|im_end|>\n", False)]
    hist = "\n".join(history[-structure.history_length:]) or "(no steps yet)"
    shown = step > 0 or structure.log_first_step
    if shown:
      user = structure.user_prompt("log", file_index=index(), history=hist, step=step, helpers="",
                                   last_action=last_action, last_outcome=last_outcome,
                                   observation=obs)
      for turn in range(r.randint(1, 2)):
        done = turn == 1 or r.random() < 0.7
        cmds = [_log_command(r, [f.name for f in store.index()], step, last_action)
                for _ in range(r.choice((0, 0, 1, 1, 1, 2)))]
        completion = "".join(cmds) + ("<|DONE|>" if done else "")
        segs += [(f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n", False),
                 (f"{completion}<|im_end|>", True), ("\n", False)]
        results = run("log", completion)
        if done:
          break
        user = structure.follow_up_prompt("log", results=results, file_index=index(), helpers="",
                                          step=step)
      user = f"{results}\n\n" + structure.user_prompt(
          "plan", file_index=index(), history="(shown above)", step=step, helpers="",
          observation="(the current observation is shown above)")
    else:
      user = structure.user_prompt("plan", file_index=index(), history=hist, step=step,
                                   helpers="", observation=obs)
    # Mostly the moves and "Do" an agent plays most (valid in every task of the game).
    action = r.choice(common if r.random() < 0.85 else actions)
    if r.random() < 0.25:
      lookup = _plan_lookup(r, [f.name for f in store.index()])
      segs += [(f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n", False),
               (f"{lookup}<|im_end|>", True), ("\n", False)]
      user = structure.follow_up_prompt("plan", results=run("plan", lookup), helpers="",
                                        file_index=index(), step=step)
    segs += [(f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n", False),
             (f"<|ACTION|>{action}<|END|><|im_end|>", True), ("\n", False)]
    out.append(segs)
    history.append(f"step {step}: {action} -> {r.choice(('moved', 'nothing happened', 'blocked'))}")
    last_action, last_outcome = action, r.choice(("You moved.", "Nothing happened.", _sentence(r)))
  return out


def agent_chats(num_episodes: int = 120, seed: int = 0) -> list[list[tuple[str, bool]]]:
  """Synthetic agent steps of every game (see `_agent_steps`), deterministic."""
  r = random.Random(seed)
  out = []
  with tempfile.TemporaryDirectory() as tmp:
    for i in range(num_episodes):
      # Half Crafter: MiniHack and NetHack share their action names, Crafter's are its own.
      game = ("crafter", "minihack", "crafter", "nethack")[i % 4]
      out += _agent_steps(r, game, os.path.join(tmp, str(i)), r.randint(1, 6))
  return out


def tiny_corpus(num_docs: int = 3000, seed: int = 0) -> list[str]:
  """Generated text (deterministic): agent chats rendered from the real structures, prompts,
  action names and command language, plus short notes and observations."""
  r = random.Random(seed)
  docs = ["".join(t for t, _ in segs) for segs in agent_chats(max(1, num_docs // 25), seed)]
  for _ in range(num_docs - len(docs)):
    docs.append("\n".join(_sentence(r) if r.random() < 0.6 else _observation(
        r, r.choice(("crafter", "nethack"))) for _ in range(r.randint(2, 6))))
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


def pretrain_tiny_model(
    model: Any, tokenizer: Tokenizer, steps: int, *, batch_size: int = 16, seq_len: int = 256,
    learning_rate: float = 6e-3, seed: int = 0, completion_weight: float = 10.0,
) -> float:
  """Trains `model` in place for `steps` AdamW steps of next-token loss on `agent_chats`.

  Every window of `seq_len` tokens ends at the end of an assistant completion (a LOG turn's
  commands and DONE, a PLAN turn's lookup or ACTION with a real action name, then
  `<|im_end|>`), so the prompt text just before a completion is always in view;
  completion tokens weigh `completion_weight` times the prompt tokens. A few hundred steps
  make the tiny model answer a PLAN prompt with `<|ACTION|>` and one of the game's action
  names, and a LOG prompt with commands the parser accepts and DONE (see the README for
  the measured fallback rate). Returns the final (weighted) loss.
  """
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from flax import nnx

  eos = tokenizer.token_to_id("<|endoftext|>")
  stream: list[int] = []
  weight: list[float] = []
  ends: list[int] = []
  for segs in agent_chats(num_episodes=100, seed=seed + 1):
    for text, is_completion in segs:
      ids = tokenizer.encode(text)
      stream += ids
      weight += [completion_weight if is_completion else 1.0] * len(ids)
      if is_completion:
        ends.append(len(stream))
    stream.append(eos)
    weight.append(1.0)
  toks_all = np.asarray(stream, np.int32)
  w_all = np.asarray(weight, np.float32)
  ends_arr = np.asarray([e for e in ends if e >= seq_len], np.int64)
  pos = jnp.broadcast_to(jnp.arange(seq_len, dtype=jnp.int32), (batch_size, seq_len))
  seg = jnp.ones((batch_size, seq_len), jnp.int32)
  sched = optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(1, steps // 10), steps)
  opt = nnx.Optimizer(model, optax.adamw(sched, weight_decay=0.01), wrt=nnx.Param)

  def loss_fn(m, toks, w):
    logits, _ = m(toks, pos, seg)
    logp = jax.nn.log_softmax(logits[:, :-1], -1)
    nll = -jnp.take_along_axis(logp, toks[:, 1:, None], -1)[..., 0]
    return jnp.sum(nll * w[:, 1:]) / jnp.sum(w[:, 1:])

  @nnx.jit
  def train_step(m, o, toks, w):
    loss, grads = nnx.value_and_grad(loss_fn)(m, toks, w)
    o.update(m, grads)
    return loss

  rng = np.random.default_rng(seed)
  loss = float("nan")
  for _ in range(steps):
    stop = ends_arr[rng.integers(0, len(ends_arr), batch_size)]
    idx = stop[:, None] - seq_len + np.arange(seq_len)[None, :]
    loss = train_step(model, opt, jnp.asarray(toks_all[idx]), jnp.asarray(w_all[idx]))
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
  Deterministic for a given (family, seed, config, pretrain_steps, CORPUS_VERSION).
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
