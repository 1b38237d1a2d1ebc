"""Engine speed paths: prefix reuse is exact, slots are bounded, batching is continuous,
adapters keep their own KV, and bucketed shapes bound the compiles."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from automem.models import GenerationEngine, SamplingParams
from automem.models import generate as gen_lib
from automem.models.slots import SlotTable, common_prefix

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=6)
SLOTS = 2


def make(model, tok, **kw) -> GenerationEngine:
  kw = dict(max_batch_size=SLOTS, num_slots=SLOTS, min_batch_bucket=2, min_prompt_bucket=16, decode_chunk=4,
            **kw)
  return GenerationEngine(model, tok, **kw)


def episodes(tok, n: int, turns: int) -> list[list[str]]:
  return [[f"Episode {e}. You see a tree and {e + 1} stones." + " Step: noop." * t
           for t in range(turns)] for e in range(n)]


def run_turns(engine, tok, texts_per_episode, params=GREEDY):
  """Each turn's prompt extends the episode's previous prompt and answer (as the agent's
  context does); episodes interleave, so slots are shared and evicted."""
  history = {e: [] for e in range(len(texts_per_episode))}
  outs = []
  for turn in range(len(texts_per_episode[0])):
    prompts = []
    for e, texts in enumerate(texts_per_episode):
      prompts.append(history[e] + tok.encode(texts[turn]))
    res = engine.generate(prompts, params)
    for e, (p, o) in enumerate(zip(prompts, res)):
      history[e] = p + o.token_ids
      outs.append(o.token_ids)
  return outs


@pytest.fixture(scope="module")
def tok(tiny_engine):
  return tiny_engine.tokenizer


def test_prefix_reuse_is_exact_and_computes_fewer_tokens(tiny_model, tok):
  cached, plain = make(tiny_model, tok), make(tiny_model, tok, prefix_cache=False)
  texts = episodes(tok, 2, 3)
  assert run_turns(cached, tok, texts) == run_turns(plain, tok, texts)
  assert plain.num_prefill_tokens == plain.num_prompt_tokens
  assert cached.num_prompt_tokens == plain.num_prompt_tokens
  assert cached.num_prefill_tokens < 0.6 * plain.num_prefill_tokens
  # New episodes evict the old ones' slots (least recently used first); still exact.
  texts = [[t.replace("Episode", "Game") for t in ep] for ep in episodes(tok, 3, 2)]
  assert run_turns(cached, tok, texts) == run_turns(plain, tok, texts)
  # Memory is bounded by the slots (+1 scratch row), whatever the number of episodes.
  assert cached._store[0][0].shape[0] == SLOTS + 1


def test_slot_table_prefers_continuations_and_evicts_lru():
  table = SlotTable(2)
  a, b = np.arange(10, dtype=np.int32), np.arange(100, 110, dtype=np.int32)
  s0, r0 = table.acquire(a, None)
  table.release(s0, a)
  s1, r1 = table.acquire(b, None)
  table.release(s1, b)
  assert (r0, r1) == (0, 0) and s0 != s1
  # A continuation of `a` finds its slot and reuses all of it.
  assert table.acquire(np.arange(15, dtype=np.int32), None) == (s0, 10)
  table.release(s0, np.arange(15, dtype=np.int32))
  # Another adapter never reuses base KV; a stranger takes the least recently used slot.
  slot, reused = table.acquire(b, "spec")
  assert (slot, reused) == (s1, 0)
  # The whole prompt is never reused: one token is left to compute its logits.
  table.release(slot, b)
  assert table.acquire(b, "spec") == (s1, len(b) - 1)
  assert common_prefix(a, a[:4]) == 4


def test_adapter_kv_is_not_shared_with_the_base(tiny_model, tiny_checkpoint_dir, tok):
  from automem.models import LoraConfig, apply_lora, load_hf_checkpoint

  tuned = load_hf_checkpoint(tiny_checkpoint_dir)
  apply_lora(tuned, LoraConfig(rank=2, alpha=4.0, targets=("k_proj", "v_proj")), seed=1)
  rng = np.random.default_rng(0)
  for layer in tuned.layers:
    for lin in (layer.self_attn.k_proj, layer.self_attn.v_proj):
      lin.lora.lora_b.set_value(rng.normal(0, 0.5, lin.lora.lora_b.shape).astype(np.float32))
  engine = make(tiny_model, tok)
  engine.add_adapter("spec", tuned)
  spec = dataclasses.replace(GREEDY, adapter="spec")
  prompt = tok.encode("Episode 7. You see water and a zombie.")
  fresh = engine.generate([prompt], spec)[0].token_ids
  engine.slots.forget(everything=True)
  base = engine.generate([prompt], GREEDY)[0]
  before = engine.num_prefill_tokens
  again = engine.generate([prompt + base.token_ids], spec)[0]
  # The base request's slot was not reused for the adapter (its K/V differ).
  assert engine.num_prefill_tokens - before == len(prompt) + len(base.token_ids)
  cont = engine.generate([prompt], spec)[0].token_ids
  assert cont == fresh
  assert again.prompt_tokens == len(prompt) + len(base.token_ids)


def test_requests_join_and_leave_between_chunks(tiny_model, tok):
  engine = make(tiny_model, tok, prefix_cache=False)
  long_p, short_p = tok.encode("A long answer please."), tok.encode("Short one.")
  want_long = engine.generate([long_p], dataclasses.replace(GREEDY, max_new_tokens=16))[0]
  want_short = engine.generate([short_p], dataclasses.replace(GREEDY, max_new_tokens=3))[0]
  (rl,) = engine.add_requests([long_p], dataclasses.replace(GREEDY, max_new_tokens=16))
  assert engine.step() == []  # prefill + one chunk of 4: the long request still runs
  (rs,) = engine.add_requests([short_p], dataclasses.replace(GREEDY, max_new_tokens=3))
  order, outs = [], {}
  while engine.has_work():
    for rid, out in engine.step():
      order.append(rid)
      outs[rid] = out
  assert order == [rs, rl]  # the late short request left first, without waiting
  assert outs[rl].token_ids == want_long.token_ids
  assert outs[rs].token_ids == want_short.token_ids
  # A cancelled request stops and frees its slot.
  (rc,) = engine.add_requests([long_p], dataclasses.replace(GREEDY, max_new_tokens=16))
  engine.step()
  engine.cancel(rc)
  assert [rid for rid, _ in engine.step()] == [rc] and not engine.has_work()
  assert engine.slots.num_free == SLOTS


def test_bucketed_shapes_bound_compiles(tiny_model, tok):
  engine = make(tiny_model, tok, prefix_cache=False)
  rng = np.random.default_rng(0)
  before = dict(gen_lib.TRACE_COUNTS)

  def traces():
    return {k: v - before.get(k, 0) for k, v in gen_lib.TRACE_COUNTS.items()}

  lengths = list(range(5, 61, 5))  # 12 prompt lengths, two at a time
  for i in range(0, len(lengths), 2):
    engine.generate([rng.integers(1, 500, n).tolist() for n in lengths[i : i + 2]], GREEDY)
  warm = traces()
  # Suffix buckets 16/32/64 x one view; decode: attended lengths 64 and 128.
  assert warm.get("prefill", 0) <= 3 and warm.get("decode", 0) <= 2, warm
  for i in range(0, len(lengths), 2):  # other lengths in the same buckets: no new traces
    engine.generate([rng.integers(1, 500, n + 2).tolist() for n in lengths[i : i + 2]], GREEDY)
  assert traces() == warm


def test_one_engine_serves_two_threads(tiny_model, tok):
  import concurrent.futures

  engine = make(tiny_model, tok, prefix_cache=False)
  prompts = [tok.encode(f"Thread {i}: you see {i} trees.") for i in range(4)]
  want = [engine.generate([p], GREEDY)[0].token_ids for p in prompts]
  (rid,) = engine.add_requests([prompts[0]], GREEDY)  # a continuous batcher's request
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    got = list(pool.map(lambda p: engine.generate([p], GREEDY)[0].token_ids, prompts))
  assert got == want
  finished = dict(engine.step())  # the other request's output waited for its own step
  assert finished[rid].token_ids == want[0] and not engine.has_work()
