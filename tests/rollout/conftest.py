"""Fixtures for the rollout tests: one tiny-model engine with a single compiled shape.

Every engine call runs at batch 2 and a 2048-token prompt bucket, so the whole
rollout suite compiles one prefill and one decode shape (the persistent JAX
cache keeps them across sessions). `tiny_model` and `tiny_checkpoint_dir` come from
the `tests.support.models` plugin.
"""

from __future__ import annotations

import pytest

from automem.models import GenerationEngine, SamplingParams, Tokenizer

ENGINE_BATCH = 2
PROMPT_BUCKET = 2048


@pytest.fixture(scope="session")
def rollout_engine(tiny_model, tiny_checkpoint_dir):
  tok = Tokenizer.from_pretrained(tiny_checkpoint_dir)
  engine = GenerationEngine(tiny_model, tok, max_batch_size=ENGINE_BATCH,
                            min_batch_bucket=ENGINE_BATCH, min_prompt_bucket=PROMPT_BUCKET,
                            decode_chunk=8)
  return engine, tok, SamplingParams
