"""Generation: slot KV cache with prefix reuse, continuous batching, bucketed shapes.

The engine keeps a fixed set of KV slots (rows). A request takes a slot, keeps the longest
prefix of its prompt that slot already holds (an earlier request of the same episode left
it there; see `slots.py`) and prefills only the rest. Decode runs `decode_chunk` steps per
dispatch inside a jitted `lax.while_loop` over every running request (EOS and
max-new-tokens on device; early exit when all are done); between chunks the host checks
stop strings, lets finished requests leave and waiting ones join. Batch size, suffix length
and the attended cache length are padded to powers of two, so a run compiles a handful of
shapes (`TRACE_COUNTS` counts them).

On a device mesh (`GenerationEngine(mesh=...)`, see `sharding.inference_mesh`) the weights
are placed by their logical axes (tensor parallel over heads, MLP and vocabulary; `fsdp`
splits the embedding dimension), the KV slots are split by KV head over `tensor`, and
activations follow the model's logical constraints under the engine's mesh, so the same
jitted functions run sharded without a host round trip inside a decode chunk.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import math
import threading
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from automem.models import sharding as shd
from automem.models.sampling import sample_tokens, sampling_mode
from automem.models.slots import SlotTable
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


# Times each jitted function was traced (= compiled), for tests that bound recompiles.
TRACE_COUNTS: collections.Counter[str] = collections.Counter()


def _on_kv_sharding(arrays: tuple[jax.Array, ...], sharding: NamedSharding | None):
  """Keeps KV arrays [rows, length, kv_heads, head_dim] split by KV head on the mesh."""
  if sharding is None:
    return arrays
  return tuple(jax.lax.with_sharding_constraint(a, sharding) for a in arrays)


def _rows_cache(store, rows, lengths, view: int, kv_sharding=None) -> KVCache:
  """The KV of slots `rows` (first `view` positions) as a per-row-indexed KVCache."""
  ks = _on_kv_sharding(tuple(k[rows, :view] for k in store[0]), kv_sharding)
  vs = _on_kv_sharding(tuple(v[rows, :view] for v in store[1]), kv_sharding)
  idx = jnp.arange(view, dtype=jnp.int32)[None, :]
  seg = (idx < lengths[:, None]).astype(jnp.int32)
  return KVCache(k=ks, v=vs, segment_ids=seg, positions=jnp.broadcast_to(idx, seg.shape),
                 index=lengths)


def _put_rows(store, rows, cache: KVCache, view: int, kv_sharding=None):
  """Writes a sub-cache back into its slots."""
  ks = tuple(k.at[rows, :view].set(c) for k, c in zip(store[0], cache.k))
  vs = tuple(v.at[rows, :view].set(c) for v, c in zip(store[1], cache.v))
  return _on_kv_sharding(ks, kv_sharding), _on_kv_sharding(vs, kv_sharding)


@functools.partial(jax.jit, static_argnames=("graphdef", "view", "mode", "kv_sharding"),
                   donate_argnames=("store",))
def _prefill(graphdef, state, store, rows, tokens, offsets, lengths, temperature, top_k, top_p,
             keys, *, view: int, mode: str | int, kv_sharding: NamedSharding | None = None):
  """Computes the prompt suffixes `tokens` [B, T] (right-padded, `lengths` real tokens each)
  after the `offsets` tokens already in each row's slot; samples each row's first token.
  `kv_sharding`: the KV store's sharding on the engine's mesh (None: one device)."""
  TRACE_COUNTS["prefill"] += 1
  model = nnx.merge(graphdef, state)
  b, t = tokens.shape
  j = jnp.arange(t, dtype=jnp.int32)[None, :]
  seg = (j < lengths[:, None]).astype(jnp.int32)
  positions = offsets[:, None] + j
  cache = _rows_cache(store, rows, offsets, view, kv_sharding)
  hidden, cache = model(tokens, positions, seg, cache, return_hidden=True)
  last = hidden[jnp.arange(b), lengths - 1]
  logits = model.logits_from_hidden(last[:, None])[:, 0]
  step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, 0)
  first = sample_tokens(logits, temperature, top_k, top_p, step_keys, mode=mode)
  return first, _put_rows(store, rows, cache, view, kv_sharding)


@functools.partial(jax.jit, static_argnames=("graphdef", "chunk", "view", "mode", "kv_sharding"),
                   donate_argnames=("store",))
def _decode(graphdef, state, store, rows, token, length, count, done, max_new, eos_ids,
            ignore_eos, temperature, top_k, top_p, keys, *, chunk: int, view: int,
            mode: str | int, kv_sharding: NamedSharding | None = None):
  """Up to `chunk` decode steps for slots `rows`: feeds `token` at position `length`.

  Returns the store, the tokens sampled this chunk [B, chunk] and the row states.
  """
  TRACE_COUNTS["decode"] += 1
  model = nnx.merge(graphdef, state)
  b = token.shape[0]
  toks = jnp.zeros((b, chunk), jnp.int32)

  def cond(c):
    i, _, _, _, _, _, done = c
    return (i < chunk) & ~jnp.all(done)

  def body(c):
    i, cache, toks, token, length, count, done = c
    seg = jnp.ones_like(token)[:, None]
    logits, cache = model(token[:, None], length[:, None], seg,
                          dataclasses.replace(cache, index=length))
    cache = dataclasses.replace(cache, k=_on_kv_sharding(cache.k, kv_sharding),
                                v=_on_kv_sharding(cache.v, kv_sharding))
    step_keys = jax.vmap(jax.random.fold_in)(keys, count)
    nxt = sample_tokens(logits[:, 0], temperature, top_k, top_p, step_keys, mode=mode)
    nxt = jnp.where(done, token, nxt)
    toks = toks.at[:, i].set(nxt)
    length = jnp.where(done, length, length + 1)
    count = jnp.where(done, count, count + 1)
    is_eos = jnp.any(nxt[:, None] == eos_ids[None, :], axis=-1) & ~ignore_eos
    done = done | is_eos | (count >= max_new)
    return i + 1, cache, toks, nxt, length, count, done

  cache = _rows_cache(store, rows, length, view, kv_sharding)
  init = (jnp.int32(0), cache, toks, token, length, count, done)
  steps, cache, toks, token, length, count, done = jax.lax.while_loop(cond, body, init)
  return _put_rows(store, rows, cache, view, kv_sharding), toks, steps, token, length, count, done


def _inference_split(model: Transformer, mesh: Mesh | None = None):
  """(graphdef, state) of `model` in eval mode (no LoRA dropout), leaving `model` as it is;
  with a mesh, the state is placed on it by its logical axes (arrays already placed so are
  shared, not copied)."""
  copy = nnx.merge(*nnx.split(model))  # new Variables over the same arrays
  copy.eval()
  graphdef, state = nnx.split(copy)
  if mesh is not None:
    state = shd.shard_state(state, mesh)
  return graphdef, state


@dataclasses.dataclass
class _Request:
  """A request in the engine: its slot, row state and the tokens generated so far."""

  rid: int
  prompt: np.ndarray
  params: SamplingParams
  key_seed: int
  slot: int = -1
  reused: int = 0
  length: int = 0  # tokens in the slot's KV
  token: int = 0  # last sampled token (not yet fed)
  ids: list[int] = dataclasses.field(default_factory=list)
  done: bool = False
  stop: tuple[int, str] | None = None
  version: int = 0  # weights version its KV was computed with


class GenerationEngine:
  """In-process generation for a `Transformer` with prefix reuse and continuous batching.

  The KV cache is a fixed set of slots (one row each). A request takes a slot, reuses the
  longest prefix of its prompt that the slot already holds (see `slots.SlotTable`), prefills
  the rest, and decodes in chunks of `decode_chunk` steps together with every other active
  request of the same adapter. Between chunks finished requests leave and waiting ones join
  (`add_requests` + `step`; `generate` runs a list to completion). Shapes are bucketed to
  powers of two (batch, suffix length, attended cache length), so a run compiles a handful
  of variants. LoRA adapters share the base weights; a slot's KV belongs to one adapter.

  Args:
    model: the model (its current weights are snapshotted; call `update_weights` after
      training steps).
    tokenizer: for EOS ids, stop strings and output text.
    max_batch_size: most requests decoding together (also the default slot count).
    min_batch_bucket: smallest batch bucket (batch sizes are padded to powers of two).
    min_prompt_bucket: smallest prefill-length bucket (buckets are powers of two).
    decode_chunk: decode steps per dispatch (stop strings are checked between chunks).
    max_seq_len: longest prompt + completion accepted.
    seed: base seed for requests without their own.
    num_slots: KV rows kept, about one per concurrent episode (memory: slots x slot length x
      KV size); default 16, at least max_batch_size.
    slot_len: initial tokens per slot (grown by doubling when a request needs more, which
      recompiles); default min(max_seq_len, 1024) rounded up to a power of two.
    prefix_cache: reuse KV of earlier requests' token prefixes (False: compute every prompt).
    mesh: a (data, fsdp, tensor) device mesh to serve on (`sharding.inference_mesh`; its
      tensor size must divide the KV heads): weights, adapters and KV slots are sharded over
      it. None: everything on the model's devices as given (one device, usually).
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
      num_slots: int | None = None,
      slot_len: int | None = None,
      prefix_cache: bool = True,
      mesh: Mesh | None = None,
  ):
    if mesh is not None:
      shd.check_inference_mesh(mesh, model.config.num_kv_heads)
    self.mesh = mesh
    self._kv_sharding = None if mesh is None else shd.kv_cache_sharding(mesh)
    self.tokenizer = tokenizer
    self.config = model.config
    self.graphdef, self.state = _inference_split(model, mesh)
    self.max_batch_size = max_batch_size
    self.min_batch_bucket = min_batch_bucket
    self.min_prompt_bucket = min_prompt_bucket
    self.decode_chunk = decode_chunk
    self.max_seq_len = max_seq_len or model.config.max_position_embeddings
    self.seed = seed
    self.eos_ids = jnp.asarray(sorted(set(tokenizer.eos_token_ids)) or [-1], jnp.int32)
    self.pad_id = tokenizer.pad_token_id
    self.prefix_cache = prefix_cache
    self.num_slots = max(num_slots or 16, max_batch_size)
    self.slots = SlotTable(self.num_slots, reuse=prefix_cache)
    self.slot_len = _bucket(slot_len or min(self.max_seq_len, 1024), 1)
    self.min_view = 4 * min_prompt_bucket  # smallest attended cache length
    # Counters: forward passes, generated tokens, prompt tokens asked for, prompt tokens
    # computed (the rest came from the prefix cache).
    self.num_forward_passes = 0
    self.num_generated_tokens = 0
    self.num_prompt_tokens = 0
    self.num_prefill_tokens = 0
    self._request_counter = 0
    self._next_rid = 0
    self._version = 0
    self._lock = threading.RLock()  # one engine may serve several batcher threads
    self._stash: list[tuple[int, GenerationOutput]] = []  # finished during another's generate
    self._waiting: collections.deque[_Request] = collections.deque()
    self._active: dict[int, _Request] = {}
    self._store: tuple[tuple[jax.Array, ...], tuple[jax.Array, ...]] | None = None
    self._capacity = 0
    self.adapters: dict[str, tuple[Any, Any]] = {}  # name -> (graphdef, state)

  def update_weights(self, model: Transformer) -> None:
    """Takes the current weights of `model` (same structure) for subsequent requests."""
    self.graphdef, self.state = _inference_split(model, self.mesh)
    self._version += 1
    self.slots.forget(everything=True)

  def add_adapter(self, name: str, adapter: str | Transformer) -> None:
    """Serves LoRA adapter `name` to requests with `SamplingParams(adapter=name)`.

    `adapter` is a PEFT directory (`export_lora_adapter` layout) or a model of the same
    base carrying LoRA adapters (e.g. the Loop-2 trainer's). The engine's base weights are
    shared, not copied: each adapter adds only its own parameters. Replaces an adapter of
    the same name (and drops KV computed with the old one).
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
    if self.mesh is not None:  # the adapter's weights by their logical axes; the base stays
      shd.shard_model(model, self.mesh)
    model.eval()
    self.adapters[name] = nnx.split(model)
    self._version += 1
    self.slots.forget(name)

  def remove_adapter(self, name: str) -> None:
    self.adapters.pop(name, None)
    self.slots.forget(name)

  # -- requests ---------------------------------------------------------------------------

  def add_requests(self, prompts: Sequence[Sequence[int]],
                   params: Sequence[SamplingParams] | SamplingParams | None = None) -> list[int]:
    """Queues requests (checked first: nothing is queued if one is bad); returns their ids."""
    with self._lock:
      return self._add_requests(prompts, params)

  def _add_requests(self, prompts, params) -> list[int]:
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
    rids = []
    for p, sp in zip(prompts, params):
      seed = sp.seed if sp.seed is not None else hash((self.seed, self._request_counter))
      self._request_counter += 1
      req = _Request(self._next_rid, np.asarray(p, np.int32), sp, seed % (2**32))
      self._next_rid += 1
      self._waiting.append(req)
      rids.append(req.rid)
    return rids

  def cancel(self, rid: int) -> None:
    """Drops a waiting or running request (its caller gave up)."""
    with self._lock:
      self._waiting = collections.deque(r for r in self._waiting if r.rid != rid)
      req = self._active.get(rid)
      if req is not None:
        req.done = True

  def has_work(self) -> bool:
    return bool(self._waiting or self._active or self._stash)

  def generate(
      self,
      prompts: Sequence[Sequence[int]],
      params: Sequence[SamplingParams] | SamplingParams | None = None,
  ) -> list[GenerationOutput]:
    """Generates one completion per prompt (token ids), in input order.

    Thread-safe: requests another thread added with `add_requests` keep running alongside
    (their outputs wait for that thread's next `step`).
    """
    with self._lock:
      rids = self.add_requests(prompts, params)
      want, results = set(rids), {}
      while len(results) < len(want):
        for rid, out in self._step():
          if rid in want:
            results[rid] = out
          else:
            self._stash.append((rid, out))
      return [results[r] for r in rids]

  def step(self) -> list[tuple[int, GenerationOutput]]:
    """Admits waiting requests into free slots (prefill), runs one decode chunk for the
    running ones, and returns the requests that finished as (id, output)."""
    with self._lock:
      stash, self._stash = self._stash, []
      return stash + self._step()

  def _step(self) -> list[tuple[int, GenerationOutput]]:
    try:
      finished = self._admit()
      groups: dict[str | None, list[_Request]] = {}
      for r in self._active.values():
        if not r.done:
          groups.setdefault(r.params.adapter, []).append(r)
      for adapter, reqs in groups.items():
        self._decode_chunk(adapter, reqs)
      for r in list(self._active.values()):
        if r.done:
          finished.append((r.rid, self._finish(r)))
      return finished
    except BaseException:
      self.abort()
      raise

  def abort(self) -> None:
    """Drops every waiting and running request (after an error) and their KV."""
    with self._lock:
      self._waiting.clear()
      for r in self._active.values():
        self.slots.release(r.slot, np.zeros((0,), np.int32))
      self._active.clear()

  # -- internals ---------------------------------------------------------------------------

  def _weights(self, adapter: str | None):
    return (self.graphdef, self.state) if adapter is None else self.adapters[adapter]

  def _on_mesh(self):
    """The engine's mesh as the ambient mesh (the model's activation constraints use it)."""
    return contextlib.nullcontext() if self.mesh is None else jax.set_mesh(self.mesh)

  def _ensure_capacity(self, need: int) -> None:
    """Grows the slot store (power-of-two length) so every slot can hold `need` tokens."""
    cap = _bucket(need, self.slot_len)
    if self._store is not None and self._store[0][0].is_deleted():
      # Donated elsewhere (a copy of this engine ran) or lost to an error: start afresh.
      self._store, self._capacity = None, 0
      self.slots.forget(everything=True)
    if self._store is not None and cap <= self._capacity:
      return
    c = self.config
    shape = (self.num_slots + 1, cap, c.num_kv_heads, c.head_dim)  # +1: scratch for padding

    def grow_fn(old):
      new = jnp.zeros(shape, c.dtype)
      return new if old is None else new.at[:, : old.shape[1]].set(old)

    # Placed as the donated outputs that replace it will be (on the weights' mesh; split by
    # KV head on the engine's), so the first prefill does not trace a second time.
    sharding = self._store_sharding()
    grow = jax.jit(grow_fn) if sharding is None else jax.jit(grow_fn, out_shardings=sharding)

    if self._store is None:
      self._store = (tuple(grow(None) for _ in range(c.num_layers)),
                     tuple(grow(None) for _ in range(c.num_layers)))
    else:
      self._store = (tuple(grow(k) for k in self._store[0]),
                     tuple(grow(v) for v in self._store[1]))
    self._capacity = cap

  def _store_sharding(self) -> NamedSharding | None:
    """The KV store's sharding: split by KV head on the engine's mesh; without one, replicated
    on the mesh the weights are on (a one-device mesh for `load_hf_checkpoint`'s), which is
    where the jitted functions put their outputs."""
    if self._kv_sharding is not None:
      return self._kv_sharding
    weights = getattr(jax.tree.leaves(self.state)[0], "sharding", None)
    if isinstance(weights, NamedSharding):
      return NamedSharding(weights.mesh, PartitionSpec())
    return None

  def _batch(self, reqs: list[_Request]):
    """Padded per-row arrays for a batch (padding rows use the scratch slot, done)."""
    n = len(reqs)
    b = _bucket(n, self.min_batch_bucket)
    rows = np.full((b,), self.num_slots, np.int32)
    temp = np.zeros((b,), np.float32)
    top_k = np.zeros((b,), np.int32)
    top_p = np.ones((b,), np.float32)
    seeds = np.zeros((b,), np.uint32)
    for i, r in enumerate(reqs):
      rows[i] = r.slot
      p = r.params
      temp[i], top_k[i], top_p[i], seeds[i] = p.temperature, p.top_k, p.top_p, r.key_seed
    keys = jax.vmap(jax.random.key)(jnp.asarray(seeds))
    mode = sampling_mode(temp[:n], top_k[:n], top_p[:n])
    return b, rows, temp, top_k, top_p, keys, mode

  def _admit(self) -> list[tuple[int, GenerationOutput]]:
    """Moves waiting requests into free slots and prefills them, one adapter at a time."""
    room = min(self.slots.num_free, self.max_batch_size - len(self._active))
    admitted: dict[str | None, list[_Request]] = {}
    while self._waiting and room > 0:
      r = self._waiting.popleft()
      r.slot, r.reused = self.slots.acquire(r.prompt, r.params.adapter)
      r.version = self._version
      self._active[r.rid] = r
      admitted.setdefault(r.params.adapter, []).append(r)
      room -= 1
    finished = []
    for adapter, reqs in admitted.items():
      self._prefill_batch(adapter, reqs)
      for r in reqs:
        if r.done:
          finished.append((r.rid, self._finish(r)))
    return finished

  def _prefill_batch(self, adapter: str | None, reqs: list[_Request]) -> None:
    self._ensure_capacity(max(len(r.prompt) + r.params.max_new_tokens for r in reqs) + 1)
    b, rows, temp, top_k, top_p, keys, mode = self._batch(reqs)
    suffix = [r.prompt[r.reused:] for r in reqs]
    t = _bucket(max(len(x) for x in suffix), self.min_prompt_bucket)
    tokens = np.full((b, t), self.pad_id, np.int32)
    offsets = np.zeros((b,), np.int32)
    lengths = np.ones((b,), np.int32)
    for i, (r, x) in enumerate(zip(reqs, suffix)):
      tokens[i, : len(x)] = x
      offsets[i], lengths[i] = r.reused, len(x)
      self.num_prompt_tokens += len(r.prompt)
      self.num_prefill_tokens += len(x)
    view = min(self._capacity, _bucket(int(offsets.max()) + t, self.min_view))
    graphdef, state = self._weights(adapter)
    with self._on_mesh():
      first, self._store = _prefill(
          graphdef, state, self._store, jnp.asarray(rows), jnp.asarray(tokens),
          jnp.asarray(offsets), jnp.asarray(lengths), temp, top_k, top_p, keys, view=view,
          mode=mode, kv_sharding=self._kv_sharding)
    self.num_forward_passes += 1
    eos = set(self.tokenizer.eos_token_ids)
    for r, tok in zip(reqs, np.asarray(first).tolist()):
      r.length, r.token, r.ids = len(r.prompt), tok, [tok]
      self._update_done(r, eos)

  def _update_done(self, r: _Request, eos: set[int]) -> None:
    p = r.params
    if p.stop:
      r.stop = self._find_stop(r.ids, p.stop)
    r.done = (r.stop is not None or (r.ids[-1] in eos and not p.ignore_eos)
              or len(r.ids) >= p.max_new_tokens)

  def _decode_chunk(self, adapter: str | None, reqs: list[_Request]) -> None:
    reqs = reqs[: self.max_batch_size]
    b, rows, temp, top_k, top_p, keys, mode = self._batch(reqs)
    token = np.zeros((b,), np.int32)
    length = np.zeros((b,), np.int32)
    count = np.ones((b,), np.int32)
    done = np.ones((b,), bool)
    max_new = np.ones((b,), np.int32)
    no_eos = np.zeros((b,), bool)
    for i, r in enumerate(reqs):
      token[i], length[i], count[i], done[i] = r.token, r.length, len(r.ids), False
      max_new[i], no_eos[i] = r.params.max_new_tokens, r.params.ignore_eos
    chunk = self.decode_chunk
    view = min(self._capacity, _bucket(int(length.max()) + chunk, self.min_view))
    graphdef, state = self._weights(adapter)
    with self._on_mesh():
      self._store, toks, steps, _, _, count_d, _ = _decode(
          graphdef, state, self._store, jnp.asarray(rows), jnp.asarray(token),
          jnp.asarray(length), jnp.asarray(count), jnp.asarray(done), jnp.asarray(max_new),
          self.eos_ids, jnp.asarray(no_eos), temp, top_k, top_p, keys, chunk=chunk, view=view,
          mode=mode, kv_sharding=self._kv_sharding)
    self.num_forward_passes += int(steps)
    toks, count_np = np.asarray(toks), np.asarray(count_d)
    eos = set(self.tokenizer.eos_token_ids)
    for i, r in enumerate(reqs):
      new = toks[i, : count_np[i] - len(r.ids)].tolist()
      r.length += len(new)
      r.ids.extend(new)
      r.token = r.ids[-1]
      self._update_done(r, eos)

  def _find_stop(self, ids: list[int], stops: tuple[str, ...]) -> tuple[int, str] | None:
    """(tokens up to the first stop string, the string), or None (host side, per chunk)."""
    eos = set(self.tokenizer.eos_token_ids)
    text = self.tokenizer.decode([x for x in ids if x not in eos])
    hits = [(text.find(s), s) for s in stops if s and s in text]
    if not hits:
      return None
    _pos, s = min(hits)
    n_tok = len(ids)
    while n_tok > 1 and s in self.tokenizer.decode([x for x in ids[: n_tok - 1] if x not in eos]):
      n_tok -= 1
    return n_tok, s

  def _finish(self, r: _Request) -> GenerationOutput:
    """Releases the request's slot (keeping its KV for later prefixes) and builds its output."""
    del self._active[r.rid]
    # The slot holds the prompt and every generated token except the last (never fed).
    fed = np.concatenate([r.prompt, np.asarray(r.ids[:-1], np.int32)])[: r.length]
    self.slots.release(r.slot, fed if r.version == self._version else fed[:0])
    out = self._output(r.ids, len(r.prompt), r.params, r.stop)
    self.num_generated_tokens += len(out.token_ids)
    return out

  def _output(self, ids, n_prompt, p: SamplingParams, stop) -> GenerationOutput:
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
