"""The local backend: the tiny JAX engine in-process behind the dynamic batcher."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from automem.llm import (
    BatchingEngine,
    Grammar,
    LLMRequest,
    LocalClient,
    default_llm_config,
    make_client,
)
from automem.models import (
    LoraConfig,
    SamplingParams,
    apply_lora,
    export_lora_adapter,
    load_hf_checkpoint,
)
from tests.llm.conftest import PROMPT_BUCKET, make_engine

pytestmark = pytest.mark.timeout(300)


def episode(i: int) -> list[dict[str, str]]:
  """Chat turns of different lengths, so each result can be traced to its request."""
  return [{"role": "system", "content": "You play Crafter and keep notes."},
          {"role": "user", "content": "Observation: " + "tree " * (i % 9) + f"step {i}"}]


@pytest.fixture(scope="module")
def engine(tiny_model, tiny_tokenizer):
  return make_engine(tiny_model, tiny_tokenizer, 64)


@pytest.fixture(scope="module")
def client(engine, tiny_tokenizer):
  return LocalClient(engine, tiny_tokenizer, sampling_params_cls=SamplingParams, timeout_s=300)


def test_64_concurrent_requests_need_fewer_forward_passes_than_sequential(
    engine, client, tiny_tokenizer):
  reqs = [LLMRequest(messages=episode(i), max_new_tokens=8, seed=i) for i in range(64)]

  async def main():
    p0 = engine.num_forward_passes
    sequential = [(await client.generate([r]))[0] for r in reqs]
    p1 = engine.num_forward_passes
    # Proves the event loop runs while the engine works: the engine call waits (on its
    # thread) until a coroutine on the loop has seen it start. No timing involved. (The
    # batcher drives this continuous engine by `step`, one decode chunk per call.)
    inside, loop_saw = threading.Event(), threading.Event()
    real_step = engine.step

    def watched_step(*args, **kwargs):
      inside.set()
      loop_saw.wait(60)
      return real_step(*args, **kwargs)

    async def watcher():
      while not inside.is_set():
        await asyncio.sleep(0.001)  # polls the condition
      loop_saw.set()

    engine.step = watched_step
    try:
      watch_task = asyncio.create_task(watcher())
      concurrent = await client.generate(reqs)
      await watch_task
    finally:
      del engine.step  # back to the class's method
    return (sequential, concurrent, p1 - p0, engine.num_forward_passes - p1,
            loop_saw.is_set())

  sequential, concurrent, seq_passes, conc_passes, loop_ran = asyncio.run(main())
  print(f"forward passes: 64 sequential {seq_passes}, 64 concurrent {conc_passes}")
  assert all(r.ok for r in sequential + concurrent)
  assert conc_passes < seq_passes
  assert conc_passes <= 8  # one prefill + at most 7 decode steps for the whole batch
  assert seq_passes >= 64  # at least one prefill each
  assert client.batchers[None].batch_sizes[-1] == 64
  expected = [len(tiny_tokenizer.apply_chat_template(episode(i))) for i in range(64)]
  assert [r.prompt_tokens for r in concurrent] == expected  # each result went to its caller
  assert [r.prompt_tokens for r in sequential] == expected
  assert loop_ran
  usage = client.usage.summary()
  assert usage["calls"] >= 128 and usage["errors"] == 0
  assert usage["completion_tokens"] == sum(r.completion_tokens for r in sequential + concurrent)


def test_bad_requests_fail_alone(client):
  reqs = [LLMRequest(messages=episode(1), max_new_tokens=4),
          LLMRequest(messages=episode(2), max_new_tokens=10_000),  # longer than max_seq_len
          LLMRequest(messages=episode(3), max_new_tokens=4, grammar=Grammar("regex", "[a-z]+")),
          LLMRequest(messages=episode(4), max_new_tokens=4, adapter="nope")]
  results = asyncio.run(client.generate(reqs))
  assert results[0].ok
  assert results[1].error_cause == "engine" and "max_seq_len" in results[1].error
  assert results[2].error_cause == "unsupported" and "regex" in results[2].error
  assert results[3].error_cause == "unsupported" and "'nope'" in results[3].error


def test_adapter_requests_go_to_the_adapter_engine(engine, tiny_model, tiny_tokenizer):
  specialist = make_engine(tiny_model, tiny_tokenizer, 64)
  client = LocalClient(engine, tiny_tokenizer, adapters={"memory": specialist},
                       sampling_params_cls=SamplingParams)
  before = specialist.num_forward_passes
  results = asyncio.run(client.generate(
      [LLMRequest(prompt="<|im_start|>user\nremember<|im_end|>\n", adapter="memory",
                  max_new_tokens=3)]))
  assert results[0].ok and specialist.num_forward_passes > before
  # Swapping adapters at run time (Loop 2 hands over a newly trained specialist).
  req = LLMRequest(prompt="remember", adapter="v2", max_new_tokens=2)
  assert asyncio.run(client.generate([req]))[0].error_cause == "unsupported"
  client.set_adapter_engine("v2", specialist)
  assert asyncio.run(client.generate([req]))[0].ok
  client.set_adapter_engine("v2", None)
  assert asyncio.run(client.generate([req]))[0].error_cause == "unsupported"


def test_make_client_builds_the_tiny_model_and_loads_adapters(tiny_checkpoint, tmp_path):
  adapter_dir = str(tmp_path / "adapter")
  model = apply_lora(load_hf_checkpoint(tiny_checkpoint), LoraConfig(rank=2, targets=("q_proj",)))
  export_lora_adapter(model, adapter_dir)
  config = default_llm_config("local")
  config.local.tiny_cache_dir = str(tmp_path / "cache")
  config.local.tiny_pretrain_steps = 0
  config.local.tiny_hidden_size = 64  # the width of the fixture the adapter was made on
  config.local.adapters = f"specialist={adapter_dir}"
  config.local.min_prompt_bucket = PROMPT_BUCKET
  client = make_client(config)
  reqs = [LLMRequest(messages=episode(0), max_new_tokens=3),
          LLMRequest(messages=episode(0), max_new_tokens=3, adapter="specialist")]

  async def main():
    async with client:
      return [(await client.generate([r]))[0] for r in reqs]

  results = asyncio.run(main())
  assert all(r.ok for r in results), results
  assert os.path.exists(tmp_path / "cache" / "qwen2-ctx4096-w64" / "config.json")
  assert list(client.batchers) == [None]  # the adapter shares the base engine
  assert sorted(client.engine.adapters) == ["specialist"]


def test_tiny_model_width_must_split_into_heads(tmp_path):
  from automem.llm.config import tiny_checkpoint_dir

  config = default_llm_config("local")
  config.local.tiny_cache_dir = str(tmp_path / "cache")
  config.local.tiny_hidden_size = 100
  with pytest.raises(ValueError, match=r"llm\.local\.tiny_hidden_size: 100: must be a multiple"):
    tiny_checkpoint_dir(config)
  assert not os.path.exists(tmp_path / "cache" / "qwen2-ctx4096-w100")  # nothing half-built


def test_local_config_rejects_bad_adapter_specs():
  config = default_llm_config("local")
  config.local.checkpoint = "/nonexistent"
  config.local.adapters = "no-path-here"
  with pytest.raises(ValueError, match="NAME=PATH"):
    make_client(config)


def test_batcher_stopped_mid_call_fails_waiting_requests():
  release = threading.Event()

  entered = threading.Event()

  class SlowEngine:
    def generate(self, prompts, params):
      entered.set()
      release.wait(60)
      return [None] * len(prompts)

  batcher = BatchingEngine(SlowEngine(), batch_wait_s=0.0)

  async def main():
    tasks = [asyncio.ensure_future(batcher.submit([1, 2], None)) for _ in range(3)]
    while not entered.is_set():  # the first batch is inside the engine now
      await asyncio.sleep(0.001)
    tasks.append(asyncio.ensure_future(batcher.submit([3], None)))  # queued behind it
    await asyncio.sleep(0)  # one loop turn: the new task enqueues its request
    batcher.stop()
    release.set()
    return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)

  outcomes = asyncio.run(main())
  batcher.close()
  assert len(outcomes) == 4
  assert all(isinstance(o, RuntimeError) and "stopped" in str(o) for o in outcomes)


def test_local_timeout_gives_an_error_result(tiny_tokenizer):
  release = threading.Event()

  class StuckEngine:  # stands in for an engine that never finishes (cannot be made slow)
    def generate(self, prompts, params):
      release.wait(5)
      raise RuntimeError("released")

  client = LocalClient(StuckEngine(), tiny_tokenizer, sampling_params_cls=SamplingParams,
                       timeout_s=0.2)
  try:
    results = asyncio.run(client.generate([LLMRequest(prompt="hi", max_new_tokens=2)] * 3))
  finally:
    release.set()
  assert [r.error_cause for r in results] == ["timeout"] * 3
  assert all(r.latency_s < 2 for r in results)
