"""Generation engine: greedy == argmax of the full forward, seeds, stops, EOS, bucketing."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

from automem.models import GenerationEngine, SamplingParams
from automem.models import generate as gen_lib
from tests.support.models import forward

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=6)


@pytest.fixture(scope="module")
def prompts(tiny_engine):
  tok = tiny_engine.tokenizer
  return [
      tok.apply_chat_template([{"role": "user", "content": "You see a tree."}]),
      tok.apply_chat_template([{"role": "system", "content": "Keep notes."},
                               {"role": "user", "content": "<|READ|>notes.md<|END|> wood: 3"}]),
      tok.encode("Step 12: move_left -> grass"),
  ]


def test_greedy_equals_argmax_of_full_forward(tiny_engine, tiny_model, prompts):
  outs = tiny_engine.generate(prompts, GREEDY)
  # One right-padded batch through the plain forward pass (no cache).
  width = 64
  seqs = np.zeros((len(prompts), width), np.int32)
  seg = np.zeros_like(seqs)
  for i, (p, o) in enumerate(zip(prompts, outs)):
    assert o.prompt_tokens == len(p)
    assert o.completion_tokens == len(o.token_ids) > 0
    seqs[i, : len(p) + len(o.token_ids)] = p + o.token_ids
    seg[i, : len(p) + len(o.token_ids)] = 1
  pos = np.broadcast_to(np.arange(width, dtype=np.int32), seqs.shape)
  argmax = np.argmax(np.asarray(forward(tiny_model, seqs, pos, seg)), -1)
  for i, (p, o) in enumerate(zip(prompts, outs)):
    n = len(p) + len(o.token_ids)
    assert o.token_ids == argmax[i, len(p) - 1 : n - 1].tolist()
    if o.finish_reason == "length":
      assert o.completion_tokens == GREEDY.max_new_tokens


def test_forward_pass_counter_and_length(tiny_engine, prompts):
  before = tiny_engine.num_forward_passes
  (o,) = tiny_engine.generate([prompts[0]], SamplingParams(temperature=0.0, max_new_tokens=5))
  if o.finish_reason == "length":
    assert o.completion_tokens == 5
    # One prefill pass (which samples the first token) + 4 decode passes.
    assert tiny_engine.num_forward_passes - before == 5


def test_seeded_sampling_independent_of_batch(tiny_engine, prompts):
  # Sampled rows use the plain sampler (no top-k/top-p), so the engine compiles one sampling
  # variant; test_sampling.py checks that every sampler variant draws the same token.
  p = SamplingParams(temperature=1.0, max_new_tokens=12, seed=7)
  alone = tiny_engine.generate([prompts[1]], p)[0]
  mixed = tiny_engine.generate(prompts, [GREEDY, p, SamplingParams(seed=8, max_new_tokens=3)])
  assert mixed[1].token_ids == alone.token_ids
  other = tiny_engine.generate([prompts[1]], dataclasses.replace(p, seed=9))[0]
  assert other.token_ids != alone.token_ids
  # A near-zero temperature is greedy.
  cold = tiny_engine.generate([prompts[1]], dataclasses.replace(p, temperature=1e-4))[0]
  assert cold.token_ids[:6] == tiny_engine.generate([prompts[1]], GREEDY)[0].token_ids


def test_stop_strings(tiny_engine, prompts):
  p = SamplingParams(temperature=1.0, max_new_tokens=24, seed=11)
  full = tiny_engine.generate([prompts[2]], p)[0]
  text = full.text
  assert len(text) >= 6
  stop = text[4:6]
  first = text.find(stop)
  cut = tiny_engine.generate([prompts[2]], SamplingParams(
      temperature=1.0, max_new_tokens=24, seed=11, stop=("never-there", stop)))[0]
  assert cut.finish_reason == "stop"
  assert cut.stop_reason == stop
  assert cut.text == text[:first]
  assert cut.token_ids == full.token_ids[: len(cut.token_ids)]
  assert len(cut.token_ids) < len(full.token_ids) or full.finish_reason == "stop"


def test_eos_ends_generation(tiny_engine, prompts):
  first_tok = tiny_engine.generate([prompts[0]], GREEDY)[0].token_ids[1]
  tok = copy.copy(tiny_engine.tokenizer)
  tok.eos_token_ids = [first_tok]
  eng = GenerationEngine.__new__(GenerationEngine)
  eng.__dict__.update(tiny_engine.__dict__)
  eng.tokenizer = tok
  eng.eos_ids = np.asarray([first_tok], np.int32)
  o = eng.generate([prompts[0]], GREEDY)[0]
  assert o.finish_reason == "stop"
  assert o.token_ids[-1] == first_tok
  assert o.stop_reason == first_tok
  assert len(o.token_ids) <= 2
  assert o.text == tok.decode(o.token_ids[:-1])


def test_bucketing_bounds_compiles(tiny_engine, prompts):
  tiny_engine.generate(prompts, GREEDY)
  n_prefill = gen_lib._prefill._cache_size()
  n_decode = gen_lib._decode._cache_size()
  # Other prompt lengths, same batch bucket: no new compiles.
  tok = tiny_engine.tokenizer
  more = [tok.encode("wood " * k) for k in (1, 2, 3)]
  tiny_engine.generate(more, GREEDY)
  assert gen_lib._prefill._cache_size() == n_prefill
  assert gen_lib._decode._cache_size() == n_decode


def test_bad_requests(tiny_engine, prompts):
  with pytest.raises(ValueError, match="empty"):
    tiny_engine.generate([[]], GREEDY)
  with pytest.raises(ValueError, match="sampling params"):
    tiny_engine.generate(prompts, [GREEDY])
  with pytest.raises(ValueError, match="top_p"):
    SamplingParams(top_p=0.0)
  with pytest.raises(ValueError, match="max_seq_len"):
    tiny_engine.generate([prompts[0]], SamplingParams(max_new_tokens=10**6))


def test_engine_on_mesh_matches_unsharded(tiny_engine, tiny_checkpoint_dir, prompts):
  from automem.models import load_hf_checkpoint, make_mesh

  model = load_hf_checkpoint(tiny_checkpoint_dir, mesh=make_mesh(1, 4, 2))
  sharded = GenerationEngine(model, tiny_engine.tokenizer, max_batch_size=8, min_batch_bucket=4,
                             min_prompt_bucket=32, decode_chunk=8)
  ours = [o.token_ids for o in sharded.generate(prompts, GREEDY)]
  assert ours == [o.token_ids for o in tiny_engine.generate(prompts, GREEDY)]


def test_named_adapters_share_the_base(tiny_engine, tiny_checkpoint_dir, prompts, tmp_path):
  from automem.models import (
      LoraConfig,
      apply_lora,
      export_lora_adapter,
      load_hf_checkpoint,
      merge_lora,
  )

  tuned = load_hf_checkpoint(tiny_checkpoint_dir)
  apply_lora(tuned, LoraConfig(rank=2, alpha=4.0, targets=("q_proj", "up_proj")), seed=1)
  rng = np.random.default_rng(0)
  for layer in tuned.layers:
    for lin in (layer.self_attn.q_proj, layer.mlp.up_proj):
      # Large enough that the random tiny model's greedy tokens change under the adapter.
      lin.lora.lora_b.set_value(rng.normal(0, 3.0, lin.lora.lora_b.shape).astype(np.float32))
  export_lora_adapter(tuned, str(tmp_path))
  tiny_engine.add_adapter("specialist", str(tmp_path))
  tiny_engine.add_adapter("live", tuned)
  spec = dataclasses.replace(GREEDY, adapter="specialist")
  live = dataclasses.replace(GREEDY, adapter="live")
  outs = tiny_engine.generate(prompts * 2, [GREEDY] * 3 + [spec, live, spec])
  # The adapted rows equal an argmax decode of the merged model; base rows are unchanged.
  merged = merge_lora(tuned)
  width = 64
  for i in (3, 4, 5):
    p, o = prompts[i - 3], outs[i]
    seq = np.zeros((1, width), np.int32)
    seq[0, : len(p) + len(o.token_ids)] = p + o.token_ids
    seg = (np.arange(width) < len(p) + len(o.token_ids)).astype(np.int32)[None]
    argmax = np.argmax(np.asarray(forward(merged, seq, np.arange(width)[None], seg)), -1)[0]
    assert o.token_ids == argmax[len(p) - 1 : len(p) + len(o.token_ids) - 1].tolist()
  base = tiny_engine.generate(prompts, GREEDY)
  assert [o.token_ids for o in outs[:3]] == [o.token_ids for o in base]
  assert any(outs[i].token_ids != base[i - 3].token_ids for i in (3, 4, 5))
  shared = tiny_engine.adapters["specialist"][1]["layers"][0]["mlp"]["down_proj"]["kernel"]
  assert shared.get_value() is tiny_engine.state["layers"][0]["mlp"]["down_proj"]["kernel"].get_value()
  with pytest.raises(ValueError, match="unknown adapter"):
    tiny_engine.generate([prompts[0]], dataclasses.replace(GREEDY, adapter="nope"))
  tiny_engine.remove_adapter("live")
  assert "live" not in tiny_engine.adapters
