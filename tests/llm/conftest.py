"""Fixtures for the LLM client tests: the tiny engine and servers on 127.0.0.1."""

from __future__ import annotations

import pytest

from tests.llm._dev_engine import CharTokenizer, DevEngine, SamplingParams
from tests.support.llm_server import LLMTestServer


@pytest.fixture(scope="session")
def llm_stack():
  """(engine, tokenizer, SamplingParams class) of the tiny model."""
  return DevEngine(), CharTokenizer(), SamplingParams


@pytest.fixture(scope="module")
def llm_server(llm_stack):
  """One server per test module; faults and counters are reset before each test."""
  engine, tokenizer, params_cls = llm_stack
  with LLMTestServer(engine, tokenizer, params_cls, model_path="/ckpt/tiny-qwen2",
                     adapters={"memory": engine}) as server:
    yield server


@pytest.fixture(autouse=True)
def _clean_server(request):
  if "llm_server" in request.fixturenames:
    server = request.getfixturevalue("llm_server")
    server.clear_faults()
    server.reset_counts()
  yield


@pytest.fixture
def make_server(llm_stack):
  """Factory for a private server (tests that kill or restart it)."""
  servers = []

  def make(**kwargs) -> LLMTestServer:
    engine, tokenizer, params_cls = llm_stack
    kwargs.setdefault("model_path", "/ckpt/tiny-qwen2")
    server = LLMTestServer(engine, tokenizer, params_cls, **kwargs).start()
    servers.append(server)
    return server

  yield make
  for s in servers:
    s.close()
