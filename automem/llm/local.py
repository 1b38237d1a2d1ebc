"""In-process backend: the JAX `GenerationEngine` behind a dynamic batcher.

Episodes send their requests concurrently; `BatchingEngine` gathers whatever
arrives within a short wait window and hands it to the engine in a worker
thread, so the event loop keeps serving. With an engine that batches
continuously (`add_requests` + `step`, as `GenerationEngine`), requests join
the running batch between decode chunks and leave as soon as they finish;
with any other engine, each gathered batch is one `engine.generate` call.
Sixty-four concurrent requests thus cost about as many forward passes as one
batch of 64, not 64 sequential generations. LoRA adapters are served by the
same engine on shared base weights (`SamplingParams.adapter`).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import os
import time
from typing import Any, Protocol

from absl import logging

from automem.llm.client import LLMClient
from automem.llm.retry import LLMCallError, RetryPolicy
from automem.llm.sglang_backend import ChatTokenizer
from automem.llm.types import LLMRequest, LLMResult
from automem.utils.errors import InputError


class Engine(Protocol):
  """What the batcher needs (automem.models.GenerationEngine has it)."""

  def generate(self, prompts: list[list[int]], params: list[Any]) -> list[Any]: ...


def _continuous(engine: Any) -> bool:
  return all(hasattr(engine, a) for a in ("add_requests", "step", "cancel", "abort", "has_work"))


@dataclasses.dataclass
class _Pending:
  prompt: list[int]
  params: Any
  future: asyncio.Future


class BatchingEngine:
  """Dynamic batching in front of one engine, bound to the event loop that first uses it.

  `submit` enqueues one prompt and awaits its output. A single worker task
  takes the first waiting request, keeps collecting for `batch_wait_s` (or
  until `max_batch_size`), then runs the whole batch on a dedicated thread.
  Continuous engines get the batch added to their running requests and one
  `step` (a decode chunk) per round; others get one `generate` call, and
  requests that arrive during it form the next batch. Requests whose caller
  gave up (cancelled futures) are dropped (cancelled in the engine).
  `continuous=False` forces whole-batch calls (benchmarks compare the two).
  """

  def __init__(self, engine: Engine, *, max_batch_size: int = 64, batch_wait_s: float = 0.005,
               continuous: bool = True):
    if max_batch_size < 1:
      raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    self.engine = engine
    self.max_batch_size = max_batch_size
    self.batch_wait_s = batch_wait_s
    self.continuous = continuous and _continuous(engine)
    self._inflight: dict[int, _Pending] = {}  # continuous: engine request id -> caller
    # Sizes of the most recent engine calls, and totals, for metrics and tests.
    self.batch_sizes: collections.deque[int] = collections.deque(maxlen=1024)
    self.num_batches = 0
    self.num_requests = 0
    self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="llm-engine")
    self._queue: asyncio.Queue[_Pending] | None = None
    self._loop: asyncio.AbstractEventLoop | None = None
    self._worker: asyncio.Task | None = None

  def _ensure_worker(self) -> asyncio.Queue[_Pending]:
    loop = asyncio.get_running_loop()
    if self._loop is not loop or self._worker is None or self._worker.done():
      self._loop = loop
      self._queue = asyncio.Queue()
      self._worker = loop.create_task(self._run(self._queue), name="llm-batcher")
    assert self._queue is not None
    return self._queue

  async def submit(self, prompt: list[int], params: Any) -> Any:
    """One generation; raises what the engine raised."""
    queue = self._ensure_worker()
    future = asyncio.get_running_loop().create_future()
    queue.put_nowait(_Pending(list(prompt), params, future))
    return await future

  async def _run(self, queue: asyncio.Queue[_Pending]) -> None:
    batch: list[_Pending] = []
    try:
      if self.continuous:
        await self._continuous_loop(queue, batch)
      else:
        await self._batch_loop(queue, batch)
    finally:  # stopped: nobody may wait forever on a request this task will never run
      while not queue.empty():
        batch.append(queue.get_nowait())
      batch.extend(self._inflight.values())
      self._inflight.clear()
      if self.continuous:
        self._executor.submit(self.engine.abort)  # after any step still running
      for p in batch:
        _settle(p.future, error=RuntimeError("the LLM batcher was stopped"))

  async def _gather(self, queue: asyncio.Queue[_Pending], batch: list[_Pending]) -> None:
    """Fills `batch`: waits for a first request and `batch_wait_s` for more."""
    loop = asyncio.get_running_loop()
    batch.append(await queue.get())
    deadline = loop.time() + self.batch_wait_s
    while len(batch) < self.max_batch_size:
      if not queue.empty():
        batch.append(queue.get_nowait())
        continue
      remaining = deadline - loop.time()
      if remaining <= 0:
        break
      try:
        batch.append(await asyncio.wait_for(queue.get(), remaining))
      except TimeoutError:
        break

  async def _continuous_loop(self, queue: asyncio.Queue[_Pending], batch: list[_Pending]) -> None:
    loop = asyncio.get_running_loop()
    while True:
      batch.clear()
      if not self._inflight:
        await self._gather(queue, batch)
      while not queue.empty():
        batch.append(queue.get_nowait())
      batch[:] = [p for p in batch if not p.future.done()]
      if batch:
        self.batch_sizes.append(len(batch))
        self.num_batches += 1
        self.num_requests += len(batch)
      gone = [rid for rid, p in self._inflight.items() if p.future.done()]
      for rid in gone:
        del self._inflight[rid]
      added, finished, error = await loop.run_in_executor(
          self._executor, self._round, list(batch), gone)
      batch.clear()
      for p, rid, e in added:
        if e is not None:
          _settle(p.future, error=e)
        else:
          self._inflight[rid] = p
      for rid, out in finished:
        p = self._inflight.pop(rid, None)
        if p is not None:
          _settle(p.future, result=out)
      if error is not None:  # the engine dropped every running request
        for p in self._inflight.values():
          _settle(p.future, error=error)
        self._inflight.clear()

  def _round(self, new: list[_Pending], gone: list[int]):
    """On the engine thread: cancels, adds (each on its own: a bad one fails alone), steps."""
    engine: Any = self.engine
    for rid in gone:
      engine.cancel(rid)
    added = []
    for p in new:
      try:
        (rid,) = engine.add_requests([p.prompt], [p.params])
      except Exception as e:
        added.append((p, None, e))
      else:
        added.append((p, rid, None))
    try:
      return added, (engine.step() if engine.has_work() else []), None
    except Exception as e:
      logging.warning("engine step failed (%s: %s); failing its requests", type(e).__name__, e)
      return added, [], e

  async def _batch_loop(self, queue: asyncio.Queue[_Pending], batch: list[_Pending]) -> None:
    loop = asyncio.get_running_loop()
    while True:
      batch.clear()
      await self._gather(queue, batch)
      batch[:] = [p for p in batch if not p.future.done()]
      if not batch:
        continue
      self.batch_sizes.append(len(batch))
      self.num_batches += 1
      self.num_requests += len(batch)
      try:
        outputs = await self._generate(loop, batch)
      except Exception as e:
        if len(batch) == 1:
          _settle(batch[0].future, error=e)
          continue
        # One bad request (say, too long) must not fail the others it was batched with:
        # run them one by one so only the culprit gets the error.
        logging.warning("engine batch of %d failed (%s: %s); retrying one by one", len(batch),
                        type(e).__name__, e)
        for p in batch:
          if p.future.done():
            continue
          try:
            (out,) = await self._generate(loop, [p])
          except Exception as e1:
            _settle(p.future, error=e1)
          else:
            _settle(p.future, result=out)
        continue
      for p, out in zip(batch, outputs, strict=True):
        _settle(p.future, result=out)

  async def _generate(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> list[Any]:
    outputs = await loop.run_in_executor(self._executor, self.engine.generate,
                                         [p.prompt for p in batch], [p.params for p in batch])
    if len(outputs) != len(batch):
      raise RuntimeError(f"engine returned {len(outputs)} outputs for {len(batch)} prompts")
    return outputs

  def stop(self) -> None:
    """Stops the batching task (a later `submit` starts a new one)."""
    if self._worker is not None and not self._worker.done():
      self._worker.cancel()
    self._worker = None

  def close(self) -> None:
    """Stops batching and the engine thread for good."""
    self.stop()
    self._executor.shutdown(wait=False, cancel_futures=True)


def _settle(future: asyncio.Future, *, result: Any = None,
            error: BaseException | None = None) -> None:
  """Completes a caller's future unless the caller already gave up (timeout, cancel)."""
  if future.done():
    return
  if error is not None:
    future.set_exception(error)
  else:
    future.set_result(result)


def default_sampling_params_cls() -> type:
  from automem.models import SamplingParams

  return SamplingParams


def engine_params(req: LLMRequest, params_cls: type, adapter: str | None = None) -> Any:
  """The engine's SamplingParams for a request (top_k: our -1 = off is the engine's 0);
  `adapter`: the engine-side adapter serving it (shared base weights)."""
  extra = {"adapter": adapter} if adapter is not None else {}
  return params_cls(temperature=req.temperature, top_p=req.top_p, top_k=max(req.top_k, 0),
                    max_new_tokens=req.max_new_tokens, stop=tuple(req.stop), seed=req.seed,
                    **extra)


class LocalClient(LLMClient):
  """The JAX generation engine in-process, with dynamic batching.

  A request's adapter is served by the main engine when it holds an adapter of
  that name (`GenerationEngine.add_adapter`: base weights shared, one engine,
  one batcher; `adapter_paths` are loaded that way), or by an engine of its own
  given in `adapters` / `set_adapter_engine`. Requests for other adapter names
  get an `unsupported` error. Grammars are not supported locally and get an
  `unsupported` error too.
  """

  backend = "local"

  def __init__(self, engine: Engine | None = None, tokenizer: ChatTokenizer | None = None, *,
               checkpoint: str = "", adapters: dict[str, Engine] | None = None,
               adapter_paths: dict[str, str] | None = None,
               max_batch_size: int = 64, batch_wait_s: float = 0.005, continuous: bool = True,
               engine_kwargs: dict[str, Any] | None = None,
               sampling_params_cls: type | None = None, **kwargs):
    # An in-process engine that failed or timed out rarely does better on a second try.
    kwargs.setdefault("retry", RetryPolicy(max_retries=0))
    super().__init__(**kwargs)
    if engine is None and not checkpoint:
      raise ValueError("LocalClient needs an engine or a checkpoint directory")
    if engine is not None and tokenizer is None:
      raise ValueError("LocalClient(engine=...) needs the engine's tokenizer too")
    self.checkpoint = checkpoint
    self.adapter_paths = dict(adapter_paths or {})
    self.tokenizer = tokenizer
    self.engine_kwargs = dict(engine_kwargs or {})
    self._max_batch_size = max_batch_size
    self._batch_wait_s = batch_wait_s
    self._continuous = continuous
    self._params_cls = sampling_params_cls
    self.batchers: dict[str | None, BatchingEngine] = {}
    if engine is not None:
      self._set_engines(engine, adapters or {})
    elif adapters:
      raise ValueError("adapters= needs engine=; with a checkpoint, pass adapter_paths=")

  def _set_engines(self, engine: Engine, adapters: dict[str, Engine]) -> None:
    self.batchers = {None: self._batcher(engine)}
    for name, eng in adapters.items():
      self.batchers[name] = self._batcher(eng)

  def _batcher(self, engine: Engine) -> BatchingEngine:
    return BatchingEngine(engine, max_batch_size=self._max_batch_size,
                          batch_wait_s=self._batch_wait_s, continuous=self._continuous)

  def add_adapter(self, name: str, adapter: Any) -> None:
    """Serves LoRA adapter `name` (a PEFT dir or a LoRA model) on the main engine's base
    weights -- the in-process counterpart of SGLang's `/load_lora_adapter`."""
    add = getattr(self.engine, "add_adapter", None)
    if add is None:
      raise ValueError(f"engine {type(self.engine).__name__} cannot add LoRA adapters")
    add(name, adapter)

  def set_adapter_engine(self, name: str, engine: Engine | None) -> None:
    """Serves adapter `name` with `engine` from now on (None removes it).

    The in-process counterpart of SGLang's `/load_lora_adapter`: after Loop 2
    trains a new specialist, merge it into a copy of the base model and hand its
    engine here. (`add_adapter` serves it without a second copy of the base.)
    """
    if not name:
      raise ValueError("adapter name must be non-empty")
    old = self.batchers.pop(name, None)
    if old is not None:
      old.close()
    if engine is not None:
      self.batchers[name] = self._batcher(engine)

  @property
  def engine(self) -> Engine:
    return self.batchers[None].engine

  async def _start(self) -> None:
    if not self.batchers:
      t0 = time.perf_counter()
      engine, tokenizer = await asyncio.to_thread(
          load_local_engine, self.checkpoint, adapters=self.adapter_paths, **self.engine_kwargs)
      self.tokenizer = tokenizer
      self._set_engines(engine, {})
      logging.info("local LLM engine from %s ready in %.1f s", self.checkpoint,
                   time.perf_counter() - t0)
    if self._params_cls is None:
      self._params_cls = default_sampling_params_cls()

  async def _close(self) -> None:
    # Engines (and their compiled functions) stay loaded; only the batch workers stop.
    for b in self.batchers.values():
      b.stop()

  def prompt_ids(self, req: LLMRequest) -> list[int]:
    assert self.tokenizer is not None
    if req.messages is not None:
      return list(self.tokenizer.apply_chat_template([dict(m) for m in req.messages],
                                                     add_generation_prompt=True))
    return list(self.tokenizer.encode(req.prompt))

  async def _call(self, requests: list[LLMRequest]) -> list[LLMResult]:
    (req,) = requests
    if req.grammar is not None:
      raise LLMCallError("unsupported", "the local backend has no constrained decoding "
                         f"({req.grammar.kind} grammar); use the sglang backend")
    batcher, shared = self.batchers.get(req.adapter), None
    main = self.batchers.get(None)
    if batcher is None and main is not None and req.adapter in getattr(main.engine, "adapters",
                                                                      {}):
      batcher, shared = main, req.adapter
    if batcher is None:
      known = sorted({k for k in self.batchers if k}
                     | set(getattr(main.engine, "adapters", {}) if main else {}))
      raise LLMCallError("unsupported", f"no local engine for adapter {req.adapter!r} "
                         f"(known: {known})")
    try:
      ids = self.prompt_ids(req)
      out = await batcher.submit(ids, engine_params(req, self._params_cls, shared))
    except LLMCallError:
      raise
    except Exception as e:
      raise LLMCallError("engine", f"{type(e).__name__}: {e}") from e
    return [LLMResult(text=out.text, finish_reason=out.finish_reason,
                      prompt_tokens=int(out.prompt_tokens),
                      completion_tokens=int(out.completion_tokens))]


def parse_adapters(spec: str) -> dict[str, str]:
  """`"name=path,name2=path2"` -> {name: path}; a clear error for anything else."""
  adapters: dict[str, str] = {}
  for item in filter(None, (x.strip() for x in spec.split(","))):
    name, sep, path = item.partition("=")
    if not sep or not name.strip() or not path.strip():
      raise ValueError(f"adapter spec {item!r} is not NAME=PATH")
    adapters[name.strip()] = os.path.expanduser(path.strip())
  return adapters


def local_engine_mesh(checkpoint: str, spec: str) -> Any:
  """The engine's device mesh for `llm.local.mesh` (None for ""), checked against the
  checkpoint's KV heads and this host's devices; a bad value is an `InputError` naming the
  field."""
  from automem.models import ModelConfig
  from automem.models.sharding import inference_mesh

  if not (spec or "").strip():
    return None
  checkpoint = os.path.expanduser(checkpoint)
  if not os.path.isfile(os.path.join(checkpoint, "config.json")):
    raise InputError("llm.local.checkpoint", f"{checkpoint!r} is not a checkpoint directory "
                     "(no config.json)")
  config = ModelConfig.from_pretrained(checkpoint)
  try:
    return inference_mesh(spec, config.num_kv_heads)
  except ValueError as e:
    raise InputError("llm.local.mesh", f"{spec!r}: {e}") from None


def load_local_engine(checkpoint: str, *, adapters: dict[str, str] | None = None,
                      dtype: str = "float32", mesh: Any = None, **engine_kwargs: Any
                      ) -> tuple[Engine, ChatTokenizer]:
  """Loads a HF-format checkpoint dir into a `GenerationEngine` and its `Tokenizer`.

  Weights are kept in `dtype` (the engine computes in it anyway: bfloat16 halves the memory
  and changes no result). `mesh`: a `jax.sharding.Mesh` or an `llm.local.mesh` spec
  (`"tensor=-1"`, `"fsdp=2,tensor=4"`; None or "" = one device); the weights are loaded
  straight into their shards, so no device ever holds the whole model. Each adapter (a PEFT
  dir, as `export_lora_adapter` writes) is added to that engine under its name: one copy of
  the base weights serves them all, per request.
  """
  import jax.numpy as jnp

  from automem import models

  checkpoint = os.path.expanduser(checkpoint)
  if not os.path.isdir(checkpoint):
    raise FileNotFoundError(f"local LLM checkpoint {checkpoint!r} is not a directory")
  if dtype not in ("float32", "bfloat16"):
    raise ValueError(f"local dtype must be float32 or bfloat16, got {dtype!r}")
  if mesh is None or isinstance(mesh, str):
    mesh = local_engine_mesh(checkpoint, mesh or "")
  model = models.load_hf_checkpoint(checkpoint, mesh, dtype=getattr(jnp, dtype),
                                    param_dtype=getattr(jnp, dtype))
  tokenizer = models.Tokenizer.from_pretrained(checkpoint)
  if mesh is not None:
    logging.info("local LLM engine on a %s mesh of %d devices",
                 dict(mesh.shape), mesh.devices.size)
  engine = models.GenerationEngine(model, tokenizer, mesh=mesh, **engine_kwargs)
  for name, path in (adapters or {}).items():
    if not os.path.isdir(path):
      raise FileNotFoundError(f"LoRA adapter {name!r}: {path!r} is not a directory")
    engine.add_adapter(name, path)
  return engine, tokenizer
