"""Fixtures for the rollout tests: one tiny-model engine with a single compiled shape.

Every engine call runs at batch 2 and a 2048-token prompt bucket, so the whole
rollout suite compiles one prefill and one decode shape (the persistent JAX
cache keeps them across sessions).
"""

from __future__ import annotations

import pytest

from automem.models import GenerationEngine, SamplingParams, Tokenizer
from tests.support.models import tiny_checkpoint_dir, tiny_model  # noqa: F401 -- fixtures

ENGINE_BATCH = 2
PROMPT_BUCKET = 2048


@pytest.fixture(scope="session")
def rollout_engine(tiny_model, tiny_checkpoint_dir):  # noqa: F811
  tok = Tokenizer.from_pretrained(tiny_checkpoint_dir)
  engine = GenerationEngine(tiny_model, tok, max_batch_size=ENGINE_BATCH,
                            min_batch_bucket=ENGINE_BATCH, min_prompt_bucket=PROMPT_BUCKET,
                            decode_chunk=8)
  return engine, tok, SamplingParams
