"""The `llm` sub-config every job embeds, and `make_client` that turns it into a client.

    config.llm = default_llm_config()                 # offline tiny model
    config.llm = default_llm_config("sglang")         # 32B on an SGLang server
    config.llm = default_llm_config("openai")         # hosted reviewer
    config.llm = default_llm_config("anthropic")      # Claude (Messages API, tool use)

Fields are overridable from the command line (`--config.llm.base_url=...`).
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections
from absl import logging

from automem.llm.client import LLMClient
from automem.llm.retry import RetryPolicy
from automem.utils.errors import InputError
from automem.utils.files import sweep_stale_tmp, tmp_path

BACKENDS = ("local", "sglang", "openai", "anthropic")
_API_DEFAULTS = {  # backend -> (model, base_url, api_key_env)
    "openai": ("gpt-4o", "https://api.openai.com/v1", "OPENAI_API_KEY"),
    "anthropic": ("claude-sonnet-4-5", "https://api.anthropic.com/v1", "ANTHROPIC_API_KEY"),
}


def default_llm_config(backend: str = "local") -> ml_collections.ConfigDict:
  """A documented LLM config; `backend` picks defaults for "local", "sglang" or "openai".

  The backend-specific defaults (model, base_url, api_key_env, timeout, retries) are
  chosen here, so a job that lets the user switch backends should build its `llm`
  field with the chosen backend (e.g. a `:llm=sglang` config variant) rather than
  only overriding `--config.llm.backend`.
  """
  if backend not in BACKENDS:
    raise ValueError(f"unknown LLM backend {backend!r}; known: {BACKENDS}")
  c = ml_collections.ConfigDict()
  c.backend = backend  # "local" (JAX engine in-process) | "sglang" | "openai" | "anthropic"
  api = _API_DEFAULTS.get(backend, ("", "http://127.0.0.1:30000", ""))
  # sglang: the checkpoint the server must serve (checked against /get_model_info; "" = any).
  # openai / anthropic: the model name sent with every request (required).
  c.model = api[0]
  # sglang: server root (launch/sglang_server.sh prints it); openai/anthropic: API root with /v1.
  c.base_url = api[1]
  c.api_key = ""  # a literal key; prefer api_key_env so keys stay out of saved configs
  c.api_key_env = api[2]  # env var holding the key
  c.concurrency = 64  # requests in flight at once (HTTP calls or engine submissions)
  c.timeout_s = 300.0 if backend != "local" else 600.0  # per attempt, seconds
  c.max_retries = 4 if backend != "local" else 0  # extra attempts on connection/429/5xx/timeout
  c.backoff_base_s = 0.5  # first backoff cap; doubles per attempt, full jitter
  c.backoff_max_s = 20.0  # cap on one backoff sleep
  c.max_retry_after_s = 60.0  # cap on how long a server's Retry-After may make us wait
  c.seed = 0  # seed of the jitter RNG (reproducible retry timing)

  c.sglang = ml_collections.ConfigDict()
  # Checkpoint or tokenizer dir of the served model: chat messages are rendered with its
  # chat template here and sent to /generate as input_ids. "" = use /v1/chat/completions.
  c.sglang.tokenizer_path = ""
  c.sglang.batch_size = 1  # requests per /generate call (SGLang batched input)
  c.sglang.wait_ready_s = 120.0  # how long start-up polls /health before giving up
  # Several servers of the same model, comma-separated roots ("" = base_url only): requests
  # go to the least busy live one; one that refuses connections is out for revive_after_s.
  c.sglang.endpoints = ""
  c.sglang.revive_after_s = 60.0  # seconds a dead endpoint stays out before it is tried again

  c.openai = ml_collections.ConfigDict()
  c.openai.sglang_extensions = False  # send regex/ebnf/top_k/lora_path (SGLang/vLLM servers)
  c.openai.max_tokens_field = "max_tokens"  # or "max_completion_tokens" (newer OpenAI models)

  c.local = ml_collections.ConfigDict()
  c.local.checkpoint = ""  # HF-format checkpoint dir; "" = the tiny offline model below
  c.local.tiny_family = "qwen2"  # family of the tiny model built when checkpoint is ""
  c.local.tiny_context = 4096  # its max_position_embeddings (NetHack prompts want ~16k)
  # Steps of next-token pretraining on scripted agent chats on the real games
  # (automem.models.tiny_corpus), so the tiny model writes commands the parser accepts and
  # commits offered actions (about 6 CPU-minutes on 2 cores, once per cache; 0 = random).
  c.local.tiny_pretrain_steps = 800
  # Its width (hidden size; 2 layers, 4 heads): 128 learns which game's action names a prompt
  # offers, 64 (the tests' tiny models) mostly answers Crafter with NetHack's names.
  c.local.tiny_hidden_size = 128
  c.local.tiny_cache_dir = ""  # where the tiny model is built once; "" = $AUTOMEM_CACHE/tiny_llm
  c.local.adapters = ""  # "name=peft_dir,...": LoRA adapters served on the shared base weights
  c.local.dtype = "float32"  # weight and activation dtype: float32 | bfloat16
  # Devices the engine shards the model over: "" = one device; else mesh axis sizes over this
  # host's chips, "AXIS=N,..." with AXIS in data|fsdp|tensor (unnamed = 1, one may be -1 =
  # the rest): "tensor=-1" = tensor parallel over every chip (heads, MLP, vocab and the KV
  # cache split; tensor must divide the model's KV heads), "fsdp=2,tensor=4" also splits the
  # embedding dim. Greedy completions equal the one-device engine's.
  c.local.mesh = ""
  c.local.max_batch_size = 64  # most requests per engine.generate call
  c.local.batch_wait_ms = 5.0  # how long the batcher waits for more requests
  c.local.min_prompt_bucket = 32  # prompts are padded to power-of-two lengths >= this
  c.local.decode_chunk = 32  # decode steps per device dispatch (stop strings checked between)
  c.local.max_seq_len = 0  # longest prompt + completion; 0 = the model's max positions
  c.local.seed = 0  # engine seed for requests without their own
  c.local.prefix_cache = True  # reuse the KV of earlier prompts' token prefixes (exact)
  c.local.num_slots = 0  # KV rows kept for reuse, ~1 per live episode; 0 = max(16, batch)
  c.local.continuous_batching = True  # requests join/leave the decode batch between chunks
  return c


def _api_key(config: ml_collections.ConfigDict) -> str | None:
  if config.api_key:
    return config.api_key
  if config.api_key_env:
    key = os.environ.get(config.api_key_env, "")
    if not key and config.backend in _API_DEFAULTS:
      raise InputError(f"${config.api_key_env}", f"the {config.backend} backend needs an API "
                       "key: set this environment variable (llm.api_key_env) or llm.api_key")
    return key or None
  return None


def tiny_checkpoint_dir(config: ml_collections.ConfigDict) -> str:
  """The cached tiny offline model for `config.local` (built on first use)."""
  from automem.models import make_tiny_checkpoint
  from automem.models.tiny import CORPUS_VERSION, default_cache_dir

  root = os.path.expanduser(config.local.tiny_cache_dir or
                            os.path.join(default_cache_dir(), "tiny_llm"))
  family, context = config.local.tiny_family, int(config.local.tiny_context)
  steps = int(config.local.tiny_pretrain_steps)
  width = int(config.local.get("tiny_hidden_size", 64))
  if width < 8 or width % 8:
    raise InputError("llm.local.tiny_hidden_size", f"{width}: must be a multiple of 8 (4 heads "
                     "of an even head size)")
  # The corpus version is in the name: a changed corpus builds a new model, not a stale hit.
  pre = f"-pre{steps}-c{CORPUS_VERSION}" if steps else ""
  path = os.path.join(root, f"{family}-ctx{context}-w{width}{pre}")
  sweep_stale_tmp(root)  # half-built models of killed runs
  if not os.path.exists(os.path.join(path, "config.json")):
    tmp = tmp_path(path)
    logging.info("building the tiny offline model in %s (%d pretraining steps; once, a few "
                 "CPU-minutes)", path, steps)
    make_tiny_checkpoint(tmp, family=family, max_position_embeddings=context,
                         pretrain_steps=steps, hidden_size=width, intermediate_size=2 * width,
                         head_dim=width // 4)
    try:
      os.replace(tmp, path)
    except OSError:  # another process won the race; its copy is as good as ours
      import shutil

      shutil.rmtree(tmp, ignore_errors=True)
  return path


def retry_policy(config: ml_collections.ConfigDict) -> RetryPolicy:
  """The `RetryPolicy` of an `llm` config."""
  return RetryPolicy(max_retries=config.max_retries, backoff_base_s=config.backoff_base_s,
                     backoff_max_s=config.backoff_max_s, max_retry_after_s=config.max_retry_after_s)


def _multi_endpoint_client(config: ml_collections.ConfigDict, tokenizer: Any,
                           common: dict[str, Any]) -> LLMClient:
  """`llm.sglang.endpoints`: one SGLang client per server behind a `MultiEndpointClient`."""
  from automem.llm.endpoints import MultiEndpointClient
  from automem.llm.sglang_backend import SGLangClient, load_tokenizer

  urls = [u.strip() for u in str(config.sglang.endpoints).split(",") if u.strip()]
  if tokenizer is None and config.sglang.tokenizer_path:
    tokenizer = load_tokenizer(config.sglang.tokenizer_path)  # once for every endpoint
  endpoints = [SGLangClient(url, model=config.model, tokenizer=tokenizer,
                            batch_size=config.sglang.batch_size,
                            wait_ready_s=config.sglang.wait_ready_s, api_key=_api_key(config),
                            **common) for url in urls]
  return MultiEndpointClient(endpoints, revive_after_s=config.sglang.revive_after_s, **common)


def make_client(config: ml_collections.ConfigDict, **inject: Any) -> LLMClient:
  """The client `config.backend` names.

  Args:
    config: an `llm` config (see `default_llm_config`).
    **inject: objects instead of loading them: `engine`, `tokenizer`, `adapters`,
      `sampling_params_cls` (local); `tokenizer` (sglang).
  """
  if config.backend not in BACKENDS:
    raise InputError("llm.backend", f"unknown LLM backend {config.backend!r}; known: {BACKENDS}")
  common = dict(
      concurrency=config.concurrency, timeout_s=config.timeout_s, seed=config.seed,
      retry=retry_policy(config))
  if config.backend == "sglang" and config.sglang.get("endpoints", ""):
    return _multi_endpoint_client(config, inject.get("tokenizer"), common)
  if config.backend == "sglang":
    from automem.llm.sglang_backend import SGLangClient

    return SGLangClient(config.base_url, model=config.model, tokenizer=inject.get("tokenizer"),
                        tokenizer_path=config.sglang.tokenizer_path,
                        batch_size=config.sglang.batch_size,
                        wait_ready_s=config.sglang.wait_ready_s, api_key=_api_key(config),
                        **common)
  if config.backend == "openai":
    from automem.llm.openai_backend import OpenAIClient

    return OpenAIClient(config.base_url, config.model, api_key=_api_key(config),
                        sglang_extensions=config.openai.sglang_extensions,
                        max_tokens_field=config.openai.max_tokens_field, **common)
  if config.backend == "anthropic":
    from automem.llm.anthropic_backend import AnthropicClient

    return AnthropicClient(config.base_url, config.model, api_key=_api_key(config), **common)
  from automem.llm.local import LocalClient, local_engine_mesh, parse_adapters

  local = config.local
  engine = inject.get("engine")
  checkpoint, engine_kwargs = "", {}
  if engine is None:
    checkpoint = local.checkpoint or tiny_checkpoint_dir(config)
    engine_kwargs = dict(dtype=local.dtype, mesh=local_engine_mesh(checkpoint, local.get("mesh", "")),
                         max_batch_size=local.max_batch_size,
                         min_prompt_bucket=local.min_prompt_bucket, decode_chunk=local.decode_chunk, max_seq_len=local.max_seq_len or None,
                         seed=local.seed, prefix_cache=local.prefix_cache,
                         num_slots=local.num_slots or None)
  return LocalClient(engine, inject.get("tokenizer"), checkpoint=checkpoint,
                     adapters=inject.get("adapters"), adapter_paths=parse_adapters(local.adapters),
                     sampling_params_cls=inject.get("sampling_params_cls"),
                     max_batch_size=local.max_batch_size, batch_wait_s=local.batch_wait_ms / 1000.0,
                     continuous=local.continuous_batching, engine_kwargs=engine_kwargs,
                     **common)
