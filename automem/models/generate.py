"""Batched generation: jitted prefill + KV-cache decode in chunks, with length bucketing.

A batch is left-padded to a prompt-length bucket and a batch-size bucket (powers of two),
so a run compiles a handful of shapes. Prefill writes the prompt into the cache and samples
the first token; decode then runs `decode_chunk` tokens per dispatch inside a jitted
`lax.while_loop` (EOS and max-new-tokens are handled on device; the loop exits early when
every row is done). Between chunks the host checks stop strings, the only host sync.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from automem.models.sampling import sample_tokens, sampling_mode
from automem.models.tokenizer import Tokenizer
from automem.models.transformer import KVCache, Transformer


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  """How to sample one request. temperature 0 = greedy; top_k 0 and top_p 1 = off."""

  temperature: float = 1.0
  top_p: float = 1.0
  top_k: int = 0
  max_new_tokens: int = 256
  stop: tuple[str, ...] = ()
  seed: int | None = None  # None: derived from the engine's seed and a request counter
  ignore_eos: bool = False  # keep generating past EOS (benchmarks)
  adapter: str | None = None  # a LoRA adapter added with `GenerationEngine.add_adapter`

  def __post_init__(self):
    if isinstance(self.stop, str):
      object.__setattr__(self, "stop", (self.stop,))
    else:
      object.__setattr__(self, "stop", tuple(self.stop))
    if self.temperature < 0:
      raise ValueError(f"temperature must be >= 0, got {self.temperature}")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
    if self.top_k < 0:
      raise ValueError(f"top_k must be >= 0, got {self.top_k}")
    if self.max_new_tokens < 1:
      raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclasses.dataclass
class GenerationOutput:
  """One completion. `token_ids` includes a final EOS token if one was sampled; `text` never
  includes EOS or the matched stop string (OpenAI/vLLM semantics)."""

  token_ids: list[int]
  text: str
  finish_reason: str  # "stop" (EOS or stop string) | "length"
  prompt_tokens: int
  completion_tokens: int
  stop_reason: str | int | None = None  # the stop string or EOS id that ended it


def _bucket(n: int, minimum: int) -> int:
  return max(minimum, 1 << max(0, math.ceil(math.log2(max(n, 1)))))


@functools.partial(jax.jit, static_argnames=("graphdef", "cache_len", "mode"))
def _prefill(graphdef, state, tokens, segment_ids, temperature, top_k, top_p, keys, *,
             cache_len: int, mode: str | int):
  model = nnx.merge(graphdef, state)
  b, _t = tokens.shape
  positions = jnp.maximum(jnp.cumsum(segment_ids, axis=1) - 1, 0)
  cache = KVCache.init(model.config, b, cache_len)
  hidden, cache = model(tokens, positions, segment_ids, cache, return_hidden=True)
  logits = model.logits_from_hidden(hidden[:, -1:])[:, 0]
  step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, 0)
  first = sample_tokens(logits, temperature, top_k, top_p, step_keys, mode=mode)
  return first, positions[:, -1] + 1, cache


@functools.partial(jax.jit, static_argnames=("graphdef", "chunk", "mode"),
                   donate_argnames=("cache", "out"))
def _decode(graphdef, state, cache, out, token, pos, count, done, max_new, eos_ids,
            ignore_eos, temperature, top_k, top_p, keys, *, chunk: int, mode: str | int):
  """Runs up to `chunk` decode steps. `out[b, count[b]-1]` holds the last sampled token."""
  model = nnx.merge(graphdef, state)

  def cond(c):
    i, _, _, _, _, _, done, _ = c
    return (i < chunk) & ~jnp.all(done)

  def body(c):
    i, cache, out, token, pos, count, done, steps = c
    seg = jnp.ones_like(token)[:, None]
    logits, cache = model(token[:, None], pos[:, None], seg, cache)
    step_keys = jax.vmap(jax.random.fold_in)(keys, count)
    nxt = sample_tokens(logits[:, 0], temperature, top_k, top_p, step_keys,
                        mode=mode)
    nxt = jnp.where(done, token, nxt)
    out = out.at[jnp.arange(out.shape[0]), jnp.where(done, out.shape[1] - 1, count)].set(
        jnp.where(done, out[:, -1], nxt))
    count = jnp.where(done, count, count + 1)
    is_eos = jnp.any(nxt[:, None] == eos_ids[None, :], axis=-1) & ~ignore_eos
    done = done | is_eos | (count >= max_new)
    return i + 1, cache, out, nxt, pos + 1, count, done, steps + 1

  init = (jnp.int32(0), cache, out, token, pos, count, done, jnp.int32(0))
  _, cache, out, token, pos, count, done, steps = jax.lax.while_loop(cond, body, init)
  return cache, out, token, pos, count, done, steps


def _inference_split(model: Transformer):
  """(graphdef, state) of `model` in eval mode (no LoRA dropout), leaving `model` as it is."""
  copy = nnx.merge(*nnx.split(model))  # new Variables over the same arrays
  copy.eval()
  return nnx.split(copy)


class GenerationEngine:
  """In-process batched generation for a `Transformer`.

  Args:
    model: the model (its current weights are snapshotted; call `update_weights` after
      training steps).
    tokenizer: for EOS ids, stop strings and output text.
    max_batch_size: larger request lists are split into batches of at most this size.
    min_batch_bucket: smallest batch bucket (batch sizes are padded to powers of two).
    min_prompt_bucket: smallest prompt-length bucket (buckets are powers of two).
    decode_chunk: decode steps per dispatch (stop strings are checked between chunks).
    max_seq_len: longest prompt + completion accepted.
    seed: base seed for requests without their own.
  """

  def __init__(
      self,
      model: Transformer,
      tokenizer: Tokenizer,
      *,
      max_batch_size: int = 32,
      min_batch_bucket: int = 1,
      min_prompt_bucket: int = 32,
      decode_chunk: int = 32,
      max_seq_len: int | None = None,
      seed: int = 0,
  ):
    self.tokenizer = tokenizer
    self.config = model.config
    self.graphdef, self.state = _inference_split(model)
    self.max_batch_size = max_batch_size
    self.min_batch_bucket = min_batch_bucket
    self.min_prompt_bucket = min_prompt_bucket
    self.decode_chunk = decode_chunk
    self.max_seq_len = max_seq_len or model.config.max_position_embeddings
    self.seed = seed
    self.eos_ids = jnp.asarray(sorted(set(tokenizer.eos_token_ids)) or [-1], jnp.int32)
    self.pad_id = tokenizer.pad_token_id
    self.num_forward_passes = 0
    self.num_generated_tokens = 0
    self._request_counter = 0
    self.adapters: dict[str, tuple[Any, Any]] = {}  # name -> (graphdef, state)

  def update_weights(self, model: Transformer) -> None:
    """Takes the current weights of `model` (same structure) for subsequent requests."""
    self.graphdef, self.state = _inference_split(model)

  def add_adapter(self, name: str, adapter: str | Transformer) -> None:
    """Serves LoRA adapter `name` to requests with `SamplingParams(adapter=name)`.

    `adapter` is a PEFT directory (`export_lora_adapter` layout) or a model of the same
    base carrying LoRA adapters (e.g. the Loop-2 trainer's). The engine's base weights are
    shared, not copied: each adapter adds only its own parameters. Replaces an adapter of
    the same name.
    """
    from automem.models.lora import apply_lora, load_lora_adapter, lora_state

    if not name:
      raise ValueError("adapter name must be non-empty")
    model = nnx.merge(self.graphdef, self.state)  # new Variables over the same base arrays
    if isinstance(adapter, str):
      load_lora_adapter(model, adapter)
    else:
      if getattr(adapter, "lora_config", None) is None:
        raise ValueError("the model passed to add_adapter has no LoRA adapters")
      apply_lora(model, adapter.lora_config)
      nnx.update(model, lora_state(adapter))
    model.eval()
    self.adapters[name] = nnx.split(model)

  def remove_adapter(self, name: str) -> None:
    self.adapters.pop(name, None)

  def generate(
      self,
      prompts: Sequence[Sequence[int]],
      params: Sequence[SamplingParams] | SamplingParams | None = None,
  ) -> list[GenerationOutput]:
    """Generates one completion per prompt (token ids), in input order."""
    if params is None:
      params = SamplingParams()
    if isinstance(params, SamplingParams):
      params = [params] * len(prompts)
    if len(params) != len(prompts):
      raise ValueError(f"{len(prompts)} prompts but {len(params)} sampling params")
    for i, p in enumerate(prompts):
      if len(p) == 0:
        raise ValueError(f"prompt {i} is empty")
      if params[i].adapter is not None and params[i].adapter not in self.adapters:
        raise ValueError(f"prompt {i}: unknown adapter {params[i].adapter!r}; "
                         f"added: {sorted(self.adapters)}")
      if len(p) + params[i].max_new_tokens > self.max_seq_len:
        raise ValueError(f"prompt {i}: {len(p)} tokens + max_new_tokens "
                         f"{params[i].max_new_tokens} exceeds max_seq_len {self.max_seq_len}")
    seeds = []
    for p in params:
      seeds.append(p.seed if p.seed is not None else hash((self.seed, self._request_counter)))
      self._request_counter += 1
    # Group by adapter, then by length so each batch pads little.
    order = sorted(range(len(prompts)),
                   key=lambda i: (params[i].adapter or "", len(prompts[i])))
    results: list[GenerationOutput | None] = [None] * len(prompts)
    start = 0
    while start < len(order):
      adapter = params[order[start]].adapter
      idx = [i for i in order[start : start + self.max_batch_size] if params[i].adapter == adapter]
      start += len(idx)
      weights = (self.graphdef, self.state) if adapter is None else self.adapters[adapter]
      outs = self._generate_batch(weights, [prompts[i] for i in idx], [params[i] for i in idx],
                                  [seeds[i] for i in idx])
      for i, o in zip(idx, outs):
        results[i] = o
    return results  # type: ignore[return-value]

  def _generate_batch(self, weights, prompts, params, seeds) -> list[GenerationOutput]:
    graphdef, state = weights
    n = len(prompts)
    b = _bucket(n, self.min_batch_bucket)
    t = _bucket(max(len(p) for p in prompts), self.min_prompt_bucket)
    max_new = max(p.max_new_tokens for p in params)
    # The cache length (prompt bucket + room for new tokens) is itself a power of two, so
    # nearby max_new_tokens values share one compiled prefill and decode.
    cache_len = _bucket(t + max_new, 2 * self.min_prompt_bucket)
    n_new = cache_len - t
    tokens = np.full((b, t), self.pad_id, np.int32)
    seg = np.zeros((b, t), np.int32)
    for i, p in enumerate(prompts):
      tokens[i, t - len(p):] = p
      seg[i, t - len(p):] = 1
    temp = np.zeros((b,), np.float32)
    top_k = np.zeros((b,), np.int32)
    top_p = np.ones((b,), np.float32)
    mx = np.ones((b,), np.int32)
    no_eos = np.zeros((b,), bool)
    for i, p in enumerate(params):
      temp[i], top_k[i], top_p[i], mx[i] = p.temperature, p.top_k, p.top_p, p.max_new_tokens
      no_eos[i] = p.ignore_eos
    keys = jax.vmap(jax.random.key)(
        jnp.asarray([s % (2**32) for s in seeds] + [0] * (b - n), jnp.uint32))
    mode = sampling_mode(temp[:n], top_k[:n], top_p[:n])
    first, pos, cache = _prefill(
        graphdef, state, jnp.asarray(tokens), jnp.asarray(seg), temp, top_k, top_p, keys,
        cache_len=cache_len, mode=mode)
    self.num_forward_passes += 1
    out = jnp.zeros((b, n_new), jnp.int32).at[:, 0].set(first)
    count = jnp.ones((b,), jnp.int32)
    eos = np.asarray(self.eos_ids)
    first_np = np.asarray(first)
    done_np = (np.isin(first_np, eos) & ~no_eos) | (mx <= 1)
    done_np[n:] = True
    done = jnp.asarray(done_np)
    token = first
    stop_at: dict[int, tuple[int, str]] = {}
    while True:
      self._check_stops(out, count, done_np, params, stop_at)
      done_np = done_np | np.isin(np.arange(b), list(stop_at))
      if done_np.all():
        break
      done = jnp.asarray(done_np)
      cache, out, token, pos, count, done, steps = _decode(
          graphdef, state, cache, out, token, pos, count, done, jnp.asarray(mx),
          self.eos_ids, jnp.asarray(no_eos), temp, top_k, top_p, keys, chunk=self.decode_chunk,
          mode=mode)
      self.num_forward_passes += int(steps)
      done_np = np.asarray(done)
    out_np, count_np = np.asarray(out), np.asarray(count)
    results = []
    for i in range(n):
      ids = out_np[i, : count_np[i]].tolist()
      results.append(self._finish(ids, len(prompts[i]), params[i], stop_at.get(i)))
      self.num_generated_tokens += len(results[-1].token_ids)
    return results

  def _check_stops(self, out, count, done_np, params, stop_at) -> None:
    """Marks rows whose text contains a stop string (host side, once per chunk)."""
    rows = [i for i, p in enumerate(params) if p.stop and i not in stop_at]
    if not rows:
      return
    out_np, count_np = np.asarray(out), np.asarray(count)
    eos = set(self.tokenizer.eos_token_ids)
    for i in rows:
      ids = out_np[i, : count_np[i]].tolist()
      # Find the shortest prefix of tokens whose text contains a stop string.
      text = self.tokenizer.decode([x for x in ids if x not in eos])
      hits = [(text.find(s), s) for s in params[i].stop if s and s in text]
      if not hits:
        continue
      _pos, s = min(hits)
      n_tok = len(ids)
      while n_tok > 1 and s in self.tokenizer.decode([x for x in ids[: n_tok - 1] if x not in eos]):
        n_tok -= 1
      stop_at[i] = (n_tok, s)

  def _finish(self, ids, n_prompt, p: SamplingParams, stop) -> GenerationOutput:
    eos = set(self.tokenizer.eos_token_ids)
    if stop is not None:
      n_tok, s = stop
      ids = ids[:n_tok]
      text = self.tokenizer.decode([x for x in ids if x not in eos])
      text = text[: text.find(s)]
      return GenerationOutput(ids, text, "stop", n_prompt, len(ids), s)
    if ids and ids[-1] in eos and not p.ignore_eos:
      text = self.tokenizer.decode(ids[:-1])
      return GenerationOutput(ids, text, "stop", n_prompt, len(ids), ids[-1])
    text = self.tokenizer.decode(ids)
    return GenerationOutput(ids, text, "length", n_prompt, len(ids), None)


def generate_text(
    engine: GenerationEngine, messages_list: Sequence[Sequence[dict[str, Any]]],
    params: Sequence[SamplingParams] | SamplingParams | None = None,
) -> list[GenerationOutput]:
  """Convenience: chat messages -> prompts via the chat template -> generate."""
  prompts = [engine.tokenizer.apply_chat_template(m) for m in messages_list]
  return engine.generate(prompts, params)
