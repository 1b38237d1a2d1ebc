"""Requests, results, retry policy, usage accounting and configs (no network, no engine)."""

from __future__ import annotations

import email.utils
import json
import random
import time

import pytest

from automem.llm import (
    Grammar,
    LLMRequest,
    LLMResult,
    OpenAIClient,
    RetryPolicy,
    SGLangClient,
    UsageTracker,
    default_llm_config,
    make_client,
)
from automem.llm.retry import LLMCallError, classify_status, parse_retry_after
from automem.utils import InputError


def test_request_needs_exactly_one_of_messages_and_prompt():
  with pytest.raises(ValueError, match="exactly one"):
    LLMRequest()
  with pytest.raises(ValueError, match="exactly one"):
    LLMRequest(prompt="a", messages=[{"role": "user", "content": "b"}])
  with pytest.raises(ValueError, match="role"):
    LLMRequest(messages=[{"content": "no role"}])
  with pytest.raises(ValueError, match="empty"):
    LLMRequest(messages=[])
  with pytest.raises(ValueError, match="max_new_tokens"):
    LLMRequest(prompt="a", max_new_tokens=0)
  with pytest.raises(ValueError, match="top_p"):
    LLMRequest(prompt="a", top_p=0.0)
  with pytest.raises(ValueError, match="grammar kind"):
    Grammar("xml", "<a/>")


def test_request_sglang_sampling_params():
  req = LLMRequest(messages=[{"role": "user", "content": "hi"}], temperature=0.7, top_k=20,
                   max_new_tokens=64, stop="<|END|>", seed=3,
                   grammar=Grammar("ebnf", 'root ::= "a"'))
  assert req.stop == ("<|END|>",)
  assert req.sglang_sampling_params() == {
      "temperature": 0.7, "top_p": 1.0, "top_k": 20, "max_new_tokens": 64,
      "stop": ["<|END|>"], "sampling_seed": 3, "ebnf": 'root ::= "a"'}
  assert isinstance(req.messages, tuple)  # frozen copy: the caller may mutate its list


def test_failure_result_names_its_cause():
  r = LLMResult.failure("timeout", "no response within 5 s", latency_s=5.0, attempts=3)
  assert not r.ok and r.text == "" and r.finish_reason == "error"
  assert r.error == "timeout: no response within 5 s" and r.error_cause == "timeout"
  assert json.loads(json.dumps(r.to_dict()))["attempts"] == 3
  with pytest.raises(ValueError, match="unknown error cause"):
    LLMResult.failure("gremlins", "?")


def test_status_classification():
  assert classify_status(429, "slow down", "2").cause == "rate_limited"
  assert classify_status(429, "", "2").retry_after_s == 2.0
  assert classify_status(503, "").cause == "server_error"
  e = classify_status(404, "no such route")
  assert e.cause == "client_error" and not e.retryable and "404" in e.message
  assert LLMCallError("connection", "refused").retryable


def test_retry_after_parsing():
  assert parse_retry_after("3") == 3.0
  assert parse_retry_after("0.25") == 0.25
  assert parse_retry_after(None) is None and parse_retry_after("soon") is None
  date = email.utils.formatdate(time.time() + 30, usegmt=True)
  assert 25 <= parse_retry_after(date) <= 31


def test_backoff_is_exponential_jittered_capped_and_honours_retry_after():
  policy = RetryPolicy(max_retries=5, backoff_base_s=0.5, backoff_max_s=4.0,
                       max_retry_after_s=10.0)
  rng = random.Random(0)
  err = LLMCallError("server_error", "x")
  for attempt in range(6):
    delays = [policy.delay_s(attempt, err, rng) for _ in range(200)]
    cap = min(4.0, 0.5 * 2**attempt)
    assert min(delays) >= 0 and max(delays) <= cap
    assert max(delays) > 0.5 * cap  # jitter spreads over the whole window
  assert policy.delay_s(0, LLMCallError("rate_limited", "x", retry_after_s=3.0), rng) >= 3.0
  assert policy.delay_s(0, LLMCallError("rate_limited", "x", retry_after_s=999), rng) == 10.0
  with pytest.raises(ValueError):
    RetryPolicy(max_retries=-1)


def test_usage_summary_percentiles_and_errors():
  usage = UsageTracker()
  for i in range(100):
    usage.record(LLMResult(text="x", finish_reason="stop", prompt_tokens=10, completion_tokens=2,
                           cached_tokens=5, latency_s=float(i + 1), attempts=1 + (i == 0)))
  usage.record(LLMResult.failure("connection", "refused", latency_s=0.5, attempts=3))
  s = usage.summary()
  assert s["calls"] == 101 and s["ok"] == 100 and s["errors"] == 1
  assert s["errors_by_cause"] == {"connection": 1}
  assert s["retries"] == 1 + 2
  assert s["prompt_tokens"] == 1000 and s["completion_tokens"] == 200
  assert s["cached_tokens"] == 500 and s["cache_hit_rate"] == 0.5
  assert 49 <= s["latency_s"]["p50"] <= 51 and 89 <= s["latency_s"]["p90"] <= 91
  assert 98 <= s["latency_s"]["p99"] <= 100 and s["latency_s"]["max"] == 100.0
  assert s["wall_s"] >= 100.0  # the slowest call started 100 s before it was recorded
  assert s["completion_tokens_per_s"] == pytest.approx(200 / s["wall_s"])
  assert json.loads(json.dumps(s)) == s
  usage.reset()
  assert usage.summary()["calls"] == 0


@pytest.mark.parametrize("backend", ["local", "sglang", "openai"])
def test_default_configs_are_documented_and_complete(backend):
  config = default_llm_config(backend)
  assert config.backend == backend
  d = config.to_dict()
  assert {"base_url", "api_key_env", "concurrency", "timeout_s", "max_retries", "sglang",
          "openai", "local"} <= set(d)


def test_make_client_picks_the_backend(monkeypatch):
  config = default_llm_config("sglang")
  config.sglang.batch_size = 8
  client = make_client(config)
  assert isinstance(client, SGLangClient) and client.batch_size == 8
  assert client.retry.max_retries == config.max_retries
  monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
  client = make_client(default_llm_config("openai"))
  assert isinstance(client, OpenAIClient) and client.api_key == "sk-from-env"
  with pytest.raises(ValueError, match="unknown LLM backend"):
    default_llm_config("vllm")
  config.backend = "tgi"
  with pytest.raises(ValueError, match="unknown LLM backend"):
    make_client(config)
  config.backend = "sglang"
  config.base_url = "localhost:30000"
  with pytest.raises(ValueError, match="http://"):
    make_client(config)
  monkeypatch.delenv("OPENAI_API_KEY")  # an entry point's one-line error names the variable
  with pytest.raises(InputError, match=r"^\$OPENAI_API_KEY: the openai backend needs an API key"):
    make_client(default_llm_config("openai"))


def test_served_model_check_compares_checkpoint_names():
  from automem.llm.sglang_backend import _same_model

  assert _same_model("/ckpt/Qwen2.5-7B/", "/ckpt/Qwen2.5-7B")
  assert _same_model("Qwen/Qwen2.5-7B", "/models/Qwen2.5-7B")  # hub id vs local copy
  assert _same_model("/mnt/a/Qwen2.5-7B", "/data/Qwen2.5-7B")  # another mount point
  assert not _same_model("Qwen/Qwen2.5-7B", "/models/Qwen2.5-32B")
