"""SGLang and OpenAI-compatible backends over real HTTP on 127.0.0.1, faults included.

Every fault test bounds both the number of requests the server sees and the
wall time, so a retry loop that never ends fails the test instead of hanging.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from automem.llm import (
  Grammar,
  LLMCallError,
  LLMRequest,
  LLMServerUnavailable,
  default_llm_config,
  make_client,
  sglang_backend,
)
from automem.llm import client as client_mod
from automem.models import (
  LoraConfig,
  apply_lora,
  export_lora_adapter,
  load_hf_checkpoint,
  load_lora_adapter,
  merge_lora,
)
from tests.llm.conftest import SERVER_BATCH, FixedBatchEngine, make_engine
from tests.support.llm_server import free_port


class SleepSpy:
  """Stands in for `asyncio` inside one module: records the sleeps asked for (the backoff
  schedule, a figure independent of machine load) and can run a hook before each sleep."""

  def __init__(self, hook=None):
    self.sleeps: list[float] = []
    self.hook = hook

  def __getattr__(self, name):
    return getattr(asyncio, name)

  async def sleep(self, delay, *args, **kwargs):
    self.sleeps.append(delay)
    if self.hook is not None:
      await self.hook(len(self.sleeps))
    await asyncio.sleep(delay, *args, **kwargs)


@pytest.fixture
def spy_sleeps(monkeypatch):
  """`spy_sleeps(module, hook=None) -> SleepSpy` patched into `module`."""

  def install(module, hook=None):
    spy = SleepSpy(hook)
    monkeypatch.setattr(module, "asyncio", spy)
    return spy

  return install

# Generous: the first test also builds the tiny model and compiles the engine (cold cache);
# each fault test asserts its own tight wall-time bound.
pytestmark = pytest.mark.timeout(300)

CHAT = [{"role": "system", "content": "You play Crafter."},
        {"role": "user", "content": "Observation: a tree to the north."}]


def sglang_config(url: str, **overrides):
  c = default_llm_config("sglang")
  c.base_url = url
  c.backoff_base_s = 0.01
  c.backoff_max_s = 0.05
  c.timeout_s = 10.0
  c.max_retries = 2
  c.sglang.wait_ready_s = 5.0
  for k, v in overrides.items():
    node, _, leaf = k.rpartition(".")
    (c[node] if node else c)[leaf] = v
  return c


def openai_config(url: str, **overrides):
  c = default_llm_config("openai")
  c.base_url = url + "/v1"
  c.model = "tiny"
  c.api_key = "sk-test"
  c.api_key_env = ""
  c.backoff_base_s = 0.01
  c.backoff_max_s = 0.05
  c.max_retries = 2
  c.timeout_s = 10.0
  for k, v in overrides.items():
    node, _, leaf = k.rpartition(".")
    (c[node] if node else c)[leaf] = v
  return c


async def _generate(config, requests, **inject):
  async with make_client(config, **inject) as client:
    results = await client.generate(requests)
    return results, client.usage.summary()


def run(config, requests, **inject):
  return asyncio.run(_generate(config, requests, **inject))


def paths(server) -> list[str]:
  return [p for p, _ in server.requests]


# -- happy paths ----------------------------------------------------------------


def test_sglang_native_and_chat_endpoints(llm_server, llm_stack):
  _, tokenizer, _ = llm_stack
  reqs = [LLMRequest(prompt="The capital of France is", max_new_tokens=5, temperature=0.5),
          LLMRequest(messages=CHAT, max_new_tokens=3, stop=["\n"])]
  results, usage = run(sglang_config(llm_server.url), reqs)
  assert all(r.ok for r in results), results
  # Without a tokenizer, raw prompts use /generate and chat messages the chat endpoint.
  assert sorted(paths(llm_server)) == ["/generate", "/v1/chat/completions"]
  assert results[0].prompt_tokens == len(tokenizer.encode("The capital of France is"))
  assert results[1].prompt_tokens == len(tokenizer.apply_chat_template(CHAT))
  for r, req in zip(results, reqs):  # EOS or a stop string may end a random model early
    assert 1 <= r.completion_tokens <= req.max_new_tokens
    assert (r.finish_reason == "length") == (r.completion_tokens == req.max_new_tokens)
    assert "\n" not in results[1].text
  assert usage["calls"] == 2 and usage["errors"] == 0
  assert usage["prompt_tokens"] == results[0].prompt_tokens + results[1].prompt_tokens
  body = dict(llm_server.requests)["/generate"]
  assert body["text"] == "The capital of France is"
  assert body["sampling_params"]["max_new_tokens"] == 5
  assert body["sampling_params"]["temperature"] == 0.5


def test_sglang_renders_chat_template_and_batches(llm_server, llm_stack, tiny_checkpoint):
  _, tokenizer, _ = llm_stack
  reqs = [LLMRequest(messages=[*CHAT, {"role": "user", "content": f"step {i}"}],
                     max_new_tokens=2 + i % 3, seed=i, adapter="memory" if i % 2 else None,
                     grammar=Grammar("regex", r"<\|[A-Z]+\|>.*") if i == 0 else None)
          for i in range(6)]
  config = sglang_config(llm_server.url, **{"sglang.batch_size": 4,
                                             "sglang.tokenizer_path": tiny_checkpoint})
  results, _ = run(config, reqs)  # the client loads the checkpoint's own tokenizer
  assert all(r.ok for r in results), results
  bodies = [b for p, b in llm_server.requests]
  assert paths(llm_server) == ["/generate", "/generate"]
  assert sorted(len(b["input_ids"]) for b in bodies) == [2, 4]
  sent = {tuple(ids): (sp, lora) for b in bodies
          for ids, sp, lora in zip(b["input_ids"], b["sampling_params"], b["lora_path"])}
  for i, r in enumerate(reqs):
    ids = tuple(tokenizer.apply_chat_template(list(r.messages), add_generation_prompt=True))
    sp, lora = sent[ids]  # the client rendered the model's own chat template
    assert sp["max_new_tokens"] == r.max_new_tokens and sp["sampling_seed"] == i
    assert lora == r.adapter
    assert (sp.get("regex") is not None) == (i == 0)
    assert 1 <= results[i].completion_tokens <= r.max_new_tokens


def test_prefix_cache_hits_are_counted(llm_server, llm_stack):
  shared = "You are an agent with memory. " * 4
  n_shared = len(llm_stack[1].encode(shared)) - 1  # the last token may merge with what follows
  config = sglang_config(llm_server.url)
  first, _ = run(config, [LLMRequest(prompt=shared + "A", max_new_tokens=2)])
  second, usage = run(config, [LLMRequest(prompt=shared + "B", max_new_tokens=2)])
  assert first[0].cached_tokens < n_shared  # nothing shared yet
  assert n_shared <= second[0].cached_tokens < second[0].prompt_tokens
  assert usage["cached_tokens"] == second[0].cached_tokens
  assert 0 < usage["cache_hit_rate"] <= 1


def test_openai_backend_chat_completions_and_usage(llm_server):
  reqs = [LLMRequest(messages=CHAT, max_new_tokens=4) for _ in range(3)]
  reqs.append(LLMRequest(prompt="raw text", max_new_tokens=2))
  reqs.append(LLMRequest(messages=CHAT, max_new_tokens=2,
                         grammar=Grammar("json_schema", '{"type": "object"}')))
  results, usage = run(openai_config(llm_server.url), reqs)
  assert all(r.ok for r in results), results
  assert paths(llm_server).count("/v1/chat/completions") == 4
  assert paths(llm_server).count("/v1/completions") == 1
  assert all(1 <= r.completion_tokens <= 4 for r in results[:3])
  # The same prompt three times: the later ones report cached prompt tokens.
  assert max(r.cached_tokens for r in results[:3]) > 0
  assert usage["cached_tokens"] == sum(r.cached_tokens for r in results)
  schema_body = [b for _, b in llm_server.requests if "response_format" in b]
  assert schema_body[0]["response_format"]["json_schema"]["schema"] == {"type": "object"}
  json.dumps(usage)  # JSON-serialisable


def test_openai_backend_refuses_regex_without_sglang_extensions(llm_server):
  req = LLMRequest(messages=CHAT, grammar=Grammar("regex", "[a-z]+"), max_new_tokens=2)
  results, _ = run(openai_config(llm_server.url), [req])
  assert results[0].error_cause == "unsupported" and "regex" in results[0].error
  assert llm_server.requests == []  # nothing was sent
  results, _ = run(openai_config(llm_server.url, **{"openai.sglang_extensions": True}), [req])
  assert results[0].ok
  assert llm_server.requests[-1][1]["regex"] == "[a-z]+"


def test_openai_backend_api_key_and_list_models(make_server):
  server = make_server(api_key="sk-right")

  async def main():
    async with make_client(openai_config(server.url, api_key="sk-right")) as client:
      return await client.list_models()

  assert asyncio.run(main()) == ["/ckpt/tiny-qwen2"]
  results, usage = run(openai_config(server.url, api_key="sk-wrong"),
                       [LLMRequest(messages=CHAT, max_new_tokens=2)])
  assert results[0].error_cause == "client_error" and "401" in results[0].error
  assert results[0].attempts == 1  # a 4xx other than 429 is never retried
  assert usage["errors_by_cause"] == {"client_error": 1}


def test_openai_backend_reads_key_from_environment(monkeypatch):
  config = openai_config("http://127.0.0.1:1", api_key="", api_key_env="AUTOMEM_TEST_KEY")
  monkeypatch.delenv("AUTOMEM_TEST_KEY", raising=False)
  with pytest.raises(ValueError, match="AUTOMEM_TEST_KEY"):
    make_client(config)
  monkeypatch.setenv("AUTOMEM_TEST_KEY", "sk-env")
  assert make_client(config).api_key == "sk-env"


def test_lora_adapter_loaded_and_unloaded_at_run_time(make_server, tiny_checkpoint,
                                                      tiny_tokenizer, tmp_path):
  adapter_dir = str(tmp_path / "specialist")
  trained = apply_lora(load_hf_checkpoint(tiny_checkpoint), LoraConfig(rank=2, targets=("q_proj",)))
  export_lora_adapter(trained, adapter_dir)

  def loader(path):  # what SGLang does with --enable-lora, on the tiny model
    model = merge_lora(load_lora_adapter(load_hf_checkpoint(tiny_checkpoint), path))
    return FixedBatchEngine(make_engine(model, tiny_tokenizer, SERVER_BATCH), SERVER_BATCH)

  server = make_server(adapter_loader=loader)
  req = LLMRequest(prompt="remember the table", max_new_tokens=2, adapter="specialist-v2")

  async def main():
    async with make_client(sglang_config(server.url)) as client:
      before = await client.generate([req])
      loaded = await client.load_lora_adapter("specialist-v2", adapter_dir)
      after = await client.generate([req])
      with pytest.raises(LLMCallError, match="failed to load"):
        await client.load_lora_adapter("broken", str(tmp_path / "missing"))
      await client.unload_lora_adapter("specialist-v2")
      gone = await client.generate([req])
      return before[0], loaded, after[0], gone[0]

  before, loaded, after, gone = asyncio.run(main())
  assert before.error_cause == "client_error" and "specialist-v2" in before.error
  assert loaded["success"] and "specialist-v2" in loaded["loaded_adapters"]
  assert after.ok
  assert gone.error_cause == "client_error"


# -- start-up checks ------------------------------------------------------------


def test_sglang_start_up_fails_clearly_when_no_server(spy_sleeps):
  polls = spy_sleeps(sglang_backend)
  config = sglang_config(f"http://127.0.0.1:{free_port()}", **{"sglang.wait_ready_s": 0.5})
  with pytest.raises(LLMServerUnavailable, match=r"not ready after 0.5 s.*sglang_server\.sh"):
    run(config, [LLMRequest(prompt="x")])
  assert sum(polls.sleeps) <= 0.5  # it waited the configured 0.5 s, not the 120 s default


def test_sglang_start_up_checks_the_served_model(llm_server):
  results, _ = run(sglang_config(llm_server.url, model="/elsewhere/tiny-qwen2"),
                   [LLMRequest(prompt="x", max_new_tokens=1)])
  assert results[0].ok  # same checkpoint name, other mount point
  with pytest.raises(LLMServerUnavailable, match=r"serves '/ckpt/tiny-qwen2'.*Qwen2\.5-32B"):
    run(sglang_config(llm_server.url, model="Qwen/Qwen2.5-32B-Instruct"), [])


def test_sglang_start_up_waits_for_a_late_server(make_server, spy_sleeps):
  port = free_port()
  holder = {}

  async def start_server(n_sleeps):  # once /health has failed, the server comes up
    if n_sleeps == 1:
      await asyncio.to_thread(lambda: holder.setdefault("s", make_server(port=port)))

  polls = spy_sleeps(sglang_backend, start_server)
  results, _ = run(sglang_config(f"http://127.0.0.1:{port}"),
                   [LLMRequest(prompt="late", max_new_tokens=2)])
  assert results[0].ok and len(polls.sleeps) == 1  # one failed poll, then the server


def test_sglang_start_up_waits_while_the_server_loads(llm_server):
  llm_server.inject("health_503", times=3)
  results, _ = run(sglang_config(llm_server.url), [LLMRequest(prompt="x", max_new_tokens=1)])
  assert results[0].ok
  assert llm_server.status_counts[503] == 3


def test_one_client_serves_several_event_loops(llm_server):
  client = make_client(sglang_config(llm_server.url))
  req = LLMRequest(prompt="again", max_new_tokens=2)
  first = asyncio.run(client.generate([req]))  # lazily started, never closed
  second = asyncio.run(client.generate([req]))  # a new loop: a new session
  asyncio.run(client.close())
  assert first[0].ok and second[0].ok
  assert client.usage.summary()["calls"] == 2


# -- faults ---------------------------------------------------------------------

TRANSIENT = {"http_500": "server_error", "http_503": "server_error", "http_429": "rate_limited",
             "truncated": "bad_response", "malformed": "bad_response"}


@pytest.mark.parametrize("mode", sorted(TRANSIENT))
def test_transient_fault_is_retried_then_succeeds(llm_server, mode):
  llm_server.inject(mode, times=1)
  results, usage = run(sglang_config(llm_server.url), [LLMRequest(prompt="hello", max_new_tokens=3)])
  assert results[0].ok, results[0]
  assert results[0].attempts == 2 and usage["retries"] == 1
  assert paths(llm_server) == ["/generate", "/generate"]


@pytest.mark.parametrize("mode", sorted(TRANSIENT))
def test_persistent_fault_gives_an_error_result_naming_the_cause(llm_server, mode, spy_sleeps):
  backoff = spy_sleeps(client_mod)
  llm_server.inject(mode, times=100)
  results, usage = run(sglang_config(llm_server.url, max_retries=2),
                       [LLMRequest(prompt="hello", max_new_tokens=3)])
  r = results[0]
  assert not r.ok and r.text == "" and r.finish_reason == "error"
  assert r.error_cause == TRANSIENT[mode] and r.error.startswith(TRANSIENT[mode])
  assert "after 3 attempts" in r.error
  assert len(llm_server.requests) == 3  # 1 + max_retries, no more
  assert usage["errors_by_cause"] == {TRANSIENT[mode]: 1}
  assert len(backoff.sleeps) == 2 and max(backoff.sleeps) <= 0.05  # the configured backoff


def test_429_retry_after_is_honoured(llm_server, spy_sleeps):
  backoff = spy_sleeps(client_mod)
  llm_server.inject("http_429", times=1, retry_after="0.4")
  results, _ = run(sglang_config(llm_server.url), [LLMRequest(prompt="hi", max_new_tokens=2)])
  assert results[0].ok and results[0].attempts == 2
  assert backoff.sleeps == [0.4]  # backoff alone is at most 0.05 s here


def test_client_errors_are_not_retried(llm_server):
  llm_server.inject("http_400", times=100)
  results, _ = run(sglang_config(llm_server.url, max_retries=4),
                   [LLMRequest(prompt="hi", max_new_tokens=2)])
  assert results[0].error_cause == "client_error" and "HTTP 400" in results[0].error
  assert len(llm_server.requests) == 1


def test_unknown_adapter_is_a_client_error(llm_server, llm_stack):
  results, _ = run(sglang_config(llm_server.url),
                   [LLMRequest(prompt="hi", max_new_tokens=2, adapter="no-such-lora")])
  assert results[0].error_cause == "client_error" and "no-such-lora" in results[0].error


def test_server_abort_is_reported(llm_server):
  llm_server.inject("abort", times=1)
  results, _ = run(sglang_config(llm_server.url), [LLMRequest(prompt="hi", max_new_tokens=2)])
  assert results[0].error_cause == "aborted"


def test_slow_response_past_the_timeout(llm_server):
  llm_server.inject("slow", times=100, delay_s=2.0)
  results, _ = run(sglang_config(llm_server.url, timeout_s=0.2, max_retries=1),
                   [LLMRequest(prompt="hi", max_new_tokens=2)])
  # Both attempts were cut by the client's 0.2 s timeout, not answered after the 2 s delay.
  assert results[0].error_cause == "timeout" and "0.2 s" in results[0].error
  assert results[0].attempts == 2 and len(llm_server.requests) == 2


def test_slow_response_then_recovery(llm_server):
  llm_server.inject("slow", times=1, delay_s=2.0)
  results, _ = run(sglang_config(llm_server.url, timeout_s=0.3),
                   [LLMRequest(prompt="hi", max_new_tokens=2)])
  assert results[0].ok and results[0].attempts == 2


def test_refused_connection_is_an_error_result_not_an_exception(spy_sleeps):
  backoff = spy_sleeps(client_mod)
  config = openai_config(f"http://127.0.0.1:{free_port()}", max_retries=2)
  results, usage = run(config, [LLMRequest(messages=CHAT) for _ in range(5)])
  assert [r.error_cause for r in results] == ["connection"] * 5
  assert all(r.attempts == 3 for r in results)
  assert usage["errors_by_cause"] == {"connection": 5} and usage["retries"] == 10
  assert len(backoff.sleeps) == 10 and max(backoff.sleeps) <= 0.05


def test_server_dies_mid_run(make_server, spy_sleeps):
  backoff = spy_sleeps(client_mod)
  server = make_server()
  server.inject("slow", times=1000, delay_s=30.0)  # still inside the server when it dies
  config = sglang_config(server.url, max_retries=1)

  async def main():
    async with make_client(config) as client:
      task = asyncio.ensure_future(client.generate(
          [LLMRequest(prompt=f"episode {i}", max_new_tokens=2) for i in range(8)]))
      while server.in_flight < 8:  # every request is inside the server now
        await asyncio.sleep(0.002)
      await asyncio.to_thread(server.kill)
      return await task

  results = asyncio.run(main())
  assert len(results) == 8
  assert {r.error_cause for r in results} == {"connection"}
  assert all(r.attempts == 2 for r in results)
  assert len(backoff.sleeps) == 8 and max(backoff.sleeps) <= 0.05


def test_server_dies_and_comes_back(make_server, spy_sleeps):
  server = make_server()
  config = sglang_config(server.url, max_retries=6, backoff_base_s=0.1, backoff_max_s=0.4)
  reqs = [LLMRequest(prompt=f"episode {i}", max_new_tokens=2) for i in range(8)]

  async def restart(n_sleeps):  # the first retry waits until the server is back
    if n_sleeps == 1:
      await asyncio.to_thread(server.start)

  spy_sleeps(client_mod, restart)

  async def main():
    async with make_client(config) as client:
      first = await client.generate(reqs)
      await asyncio.to_thread(server.kill)
      second = await client.generate(reqs)
      return first, second, client.usage.summary()

  first, second, usage = asyncio.run(main())
  assert all(r.ok for r in first + second), second
  assert max(r.attempts for r in second) > 1  # the outage was seen and ridden out
  assert usage["calls"] == 16 and usage["errors"] == 0


def test_concurrency_limit_bounds_requests_in_flight(make_server):
  server = make_server()
  server.inject("slow", times=12, delay_s=0.15)
  results, _ = run(sglang_config(server.url, concurrency=3),
                   [LLMRequest(prompt=f"p{i}", max_new_tokens=2) for i in range(12)])
  assert all(r.ok for r in results)
  assert server.max_in_flight == 3
