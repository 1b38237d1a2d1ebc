"""Decode throughput of our JAX GenerationEngine vs transformers' PyTorch `generate`.

Both run greedy decoding of the same tiny random Qwen checkpoint (written by
`make_tiny_checkpoint`) on the same left-padded prompts, producing exactly
`--new_tokens` tokens per row (EOS ignored), at each batch size. Each side runs in its own
spawned process so its peak RSS is its own; compile/warm-up calls are not timed.

    python benchmarks/bench_generate.py                       # batch 1 and 8, tiny model
    python benchmarks/bench_generate.py --batch_sizes=1,8,32 --new_tokens=128
    python benchmarks/bench_generate.py --hidden_size=256 --num_layers=4

Prints a markdown table: generated tokens/s for both (prefill included; prompts are
short), the ratio ours / transformers, and each process's peak RSS; plus how many greedy
tokens the two agree on (a correctness check on the comparison). transformers runs once per
`--torch_threads` value and its best is reported (on a busy machine 1 thread is often much
faster than torch's default). Target (issue 5): ratio >= 1 at batch 8 on CPU.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
from absl import app, flags

_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "8"], "Batch sizes to time.")
_NEW_TOKENS = flags.DEFINE_integer("new_tokens", 64, "Tokens generated per row.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls per batch size (best is reported).")
_FAMILY = flags.DEFINE_enum("family", "qwen2", ["qwen2", "qwen3"], "Model family.")
_HIDDEN = flags.DEFINE_integer("hidden_size", 64, "Model width.")
_LAYERS = flags.DEFINE_integer("num_layers", 2, "Decoder layers.")
_THREADS = flags.DEFINE_list(
    "torch_threads", ["1", "0"],
    "torch.set_num_threads values to try (0 = torch's default); the peer's best is reported.")
_OUT = flags.DEFINE_string("out", None, "Optional JSON file for the results.")

_TEXTS = [
    "You see a tree 2 steps north and water 3 steps east. Health: 9, food: 7.",
    "<|READ|>notes.md<|END|> What should I do next?",
    "Step 41: collect_wood. Inventory: wood 3, sapling 1.",
    "A zombie is near. Remember to place a table before night.",
    "Achievement unlocked: place_table; you are facing grass.",
    "<|APPEND|>plan.md|make a wood pickaxe, then collect stone<|END|>",
    "Dungeon level 2. You hear the footsteps of a guard on patrol.",
    "Reward 1.0. You see iron 5 steps south-west and coal 1 step west.",
]


def _prompts(path: str, batch: int) -> list[list[int]]:
  from automem.models import Tokenizer

  tok = Tokenizer.from_pretrained(path)
  return [tok.apply_chat_template([{"role": "user", "content": _TEXTS[i % len(_TEXTS)]}])
          for i in range(batch)]


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run_ours(path, batch_sizes, new_tokens, repeats, queue):
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  from automem.models import GenerationEngine, SamplingParams, Tokenizer, load_hf_checkpoint

  engine = GenerationEngine(load_hf_checkpoint(path), Tokenizer.from_pretrained(path),
                            max_batch_size=max(batch_sizes), decode_chunk=64)
  params = SamplingParams(temperature=0.0, max_new_tokens=new_tokens, ignore_eos=True)
  res = {}
  for b in batch_sizes:
    prompts = _prompts(path, b)
    t0 = time.perf_counter()
    engine.generate(prompts, params)  # compile
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      outs = engine.generate(prompts, params)
      times.append(time.perf_counter() - t0)
    assert all(len(o.token_ids) == new_tokens for o in outs)
    res[b] = {"tok_s": b * new_tokens / min(times), "compile_s": compile_s,
              "tokens": [o.token_ids for o in outs]}
  queue.put({"results": res, "rss_mb": _peak_rss_mb()})


def _run_torch(path, batch_sizes, new_tokens, repeats, threads, queue):
  import torch
  import transformers

  if threads > 0:
    torch.set_num_threads(threads)
  model = transformers.AutoModelForCausalLM.from_pretrained(
      path, dtype=torch.float32, local_files_only=True).eval()
  pad = model.config.pad_token_id or 0
  res = {}
  for b in batch_sizes:
    prompts = _prompts(path, b)
    width = max(len(p) for p in prompts)
    ids = torch.full((b, width), pad, dtype=torch.long)
    mask = torch.zeros((b, width), dtype=torch.long)
    for i, p in enumerate(prompts):
      ids[i, width - len(p):] = torch.tensor(p)
      mask[i, width - len(p):] = 1
    kw = dict(attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
              do_sample=False, pad_token_id=pad)
    with torch.inference_mode():
      model.generate(ids, **kw)  # warm-up
      times = []
      for _ in range(repeats):
        t0 = time.perf_counter()
        out = model.generate(ids, **kw)
        times.append(time.perf_counter() - t0)
    new = out[:, width:]
    assert new.shape[1] == new_tokens
    res[b] = {"tok_s": b * new_tokens / min(times), "tokens": new.tolist()}
  queue.put({"results": res, "rss_mb": _peak_rss_mb(),
             "torch_threads": torch.get_num_threads()})


def _in_child(fn, *args):
  ctx = mp.get_context("spawn")
  q = ctx.Queue()
  p = ctx.Process(target=fn, args=(*args, q))
  p.start()
  out = q.get()
  p.join()
  return out


def main(argv):
  del argv
  from automem.models import make_tiny_checkpoint

  batch_sizes = [int(b) for b in _BATCH_SIZES.value]
  n = _NEW_TOKENS.value
  with tempfile.TemporaryDirectory() as d:
    path = make_tiny_checkpoint(d, _FAMILY.value, hidden_size=_HIDDEN.value,
                                num_layers=_LAYERS.value,
                                intermediate_size=2 * _HIDDEN.value,
                                head_dim=_HIDDEN.value // 4)
    ours = _in_child(_run_ours, path, batch_sizes, n, _REPEATS.value)
    peers = [_in_child(_run_torch, path, batch_sizes, n, _REPEATS.value, int(th))
             for th in _THREADS.value]
  # The peer at its best thread count per batch size (fewer threads often win on a busy CPU).
  best = {b: max(peers, key=lambda p, b=b: p["results"][b]["tok_s"]) for b in batch_sizes}
  print(f"\nmodel: {_FAMILY.value} hidden={_HIDDEN.value} layers={_LAYERS.value}, greedy, "
        f"{n} new tokens/row, CPU ({os.cpu_count()} cores), load average "
        f"{os.getloadavg()[0]:.1f}\n")
  print("| batch | ours tok/s | transformers tok/s (threads) | ratio | ours compile s | "
        "greedy agreement |")
  print("|---:|---:|---:|---:|---:|---:|")
  rows = []
  for b in batch_sizes:
    peer = best[b]
    o, t = ours["results"][b], peer["results"][b]
    agree = float(np.mean(np.asarray(o["tokens"]) == np.asarray(t["tokens"])))
    ratio = o["tok_s"] / t["tok_s"]
    rows.append({"batch": b, "ours_tok_s": o["tok_s"], "torch_tok_s": t["tok_s"],
                 "torch_threads": peer["torch_threads"],
                 "ratio": ratio, "compile_s": o["compile_s"], "agreement": agree})
    print(f"| {b} | {o['tok_s']:.0f} | {t['tok_s']:.0f} ({peer['torch_threads']}) | {ratio:.2f}x | "
          f"{o['compile_s']:.1f} | {agree:.0%} |")
  torch_rss = max(p["rss_mb"] for p in peers)
  print(f"\npeak RSS: ours {ours['rss_mb']:.0f} MB, transformers {torch_rss:.0f} MB")
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump({"rows": rows, "ours_rss_mb": ours["rss_mb"], "torch_rss_mb": torch_rss}, f,
                indent=2)


if __name__ == "__main__":
  app.run(main)
