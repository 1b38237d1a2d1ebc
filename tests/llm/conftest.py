"""Fixtures for the LLM client tests: the tiny model's engine and servers on 127.0.0.1.

Compiles are the cost on CPU, so every engine here pads prompts to one length
bucket (128) and the HTTP server's engine always runs batches of exactly 8:
the whole HTTP suite compiles one shape, the local-backend tests two more
(batch 1 and batch 64).
"""

from __future__ import annotations

import pytest

from automem.models import (
    GenerationEngine,
    SamplingParams,
    Tokenizer,
    load_hf_checkpoint,
    make_tiny_checkpoint,
)
from tests.support.llm_server import LLMTestServer

PROMPT_BUCKET = 128
SERVER_BATCH = 8


class FixedBatchEngine:
  """Runs every batch at exactly `size` rows (repeating the last prompt), so one compiled
  shape serves any batch the server forms; outputs of the filler rows are dropped."""

  def __init__(self, engine: GenerationEngine, size: int):
    self.engine = engine
    self.size = size
    self.calls = 0

  @property
  def num_forward_passes(self) -> int:
    return self.engine.num_forward_passes

  def generate(self, prompts, params):
    n = len(prompts)
    assert 0 < n <= self.size, n
    self.calls += 1
    pad = self.size - n
    outs = self.engine.generate(list(prompts) + [prompts[-1]] * pad,
                                list(params) + [params[-1]] * pad)
    return outs[:n]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> str:
  return make_tiny_checkpoint(str(tmp_path_factory.mktemp("tiny_llm") / "qwen2"), "qwen2")


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
  return load_hf_checkpoint(tiny_checkpoint)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_checkpoint) -> Tokenizer:
  return Tokenizer.from_pretrained(tiny_checkpoint)


def make_engine(model, tokenizer, max_batch_size: int) -> GenerationEngine:
  return GenerationEngine(model, tokenizer, max_batch_size=max_batch_size,
                          min_prompt_bucket=PROMPT_BUCKET)


@pytest.fixture(scope="session")
def llm_stack(tiny_model, tiny_tokenizer):
  """(engine, tokenizer, SamplingParams) behind the HTTP test servers."""
  engine = FixedBatchEngine(make_engine(tiny_model, tiny_tokenizer, SERVER_BATCH), SERVER_BATCH)
  engine.generate([[1, 2, 3]], [SamplingParams(max_new_tokens=2)])  # compile outside timeouts
  return engine, tiny_tokenizer, SamplingParams


@pytest.fixture(scope="module")
def llm_server(llm_stack):
  """One server per test module; faults and counters are reset before each test."""
  engine, tokenizer, params_cls = llm_stack
  with LLMTestServer(engine, tokenizer, params_cls, model_path="/ckpt/tiny-qwen2",
                     adapters={"memory": engine}, max_batch_size=SERVER_BATCH) as server:
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
    kwargs.setdefault("max_batch_size", SERVER_BATCH)
    server = LLMTestServer(engine, tokenizer, params_cls, **kwargs).start()
    servers.append(server)
    return server

  yield make
  for s in servers:
    s.close()
