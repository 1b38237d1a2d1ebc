"""Training throughput: our jitted Flax/optax step vs a transformers + PyTorch step, same model.

Both sides train the same HF checkpoint (written by `make_tiny_checkpoint`, by
default a little wider than the test model) on the same random rows with the
same loss (cross-entropy on masked tokens), AdamW, LoRA (peft on the torch
side) or full fine-tuning, float32 on CPU, one optimizer step per batch.
Reports training tokens/s (all row tokens, masked or not) and the ratio.

  python benchmarks/bench_train.py                  # LoRA and full, about 2-4 minutes on CPU
  python benchmarks/bench_train.py --modes=lora --steps=5 --hidden=128

No GPU is needed (nor used: torch runs on CPU, JAX on its default backend).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def _rows(vocab: int, batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, vocab, (batch, seq + 1)).astype(np.int32)
  weights = (rng.random((batch, seq)) < 0.3).astype(np.float32)  # ~masked-SFT density
  return {"inputs": ids[:, :-1], "targets": ids[:, 1:], "weights": weights,
          "segment_ids": np.ones((batch, seq), np.int32),
          "positions": np.broadcast_to(np.arange(seq, dtype=np.int32), (batch, seq)).copy()}


def bench_jax(base: str, mode: str, rows: dict[str, np.ndarray], steps: int, rank: int
              ) -> float:
  import jax
  import jax.numpy as jnp

  from automem.models import sharding as shd
  from automem.models.checkpoint import load_hf_checkpoint
  from automem.models.lora import LoraConfig, apply_lora
  from automem.proficiency import OptimConfig, Trainer

  mesh = shd.make_mesh(1, 1, 1)
  model = load_hf_checkpoint(base, mesh)
  if mode == "lora":
    apply_lora(model, LoraConfig(rank=rank, alpha=2.0 * rank), mesh=mesh)
  trainer = Trainer(model, mesh, OptimConfig(learning_rate=1e-4, warmup_steps=0, total_steps=100),
                    finetune=mode, frozen_dtype=jnp.float32)
  batch = {k: jax.device_put(v[None], trainer.batch_sharding) for k, v in rows.items()}
  state = trainer.init_state()
  for _ in range(2):  # compile + warm up
    state, m = trainer.step(state, batch)
  jax.block_until_ready(m)
  t0 = time.perf_counter()
  for _ in range(steps):
    state, m = trainer.step(state, batch)
  jax.block_until_ready((state, m))
  return rows["inputs"].size * steps / (time.perf_counter() - t0)


def bench_torch(base: str, mode: str, rows: dict[str, np.ndarray], steps: int, rank: int
                ) -> float:
  import torch
  from transformers import AutoModelForCausalLM

  torch.manual_seed(0)
  model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
  if mode == "lora":
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(model, LoraConfig(
        r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                        "down_proj"]))
  model.train()
  params = [p for p in model.parameters() if p.requires_grad]
  opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
  inputs = torch.from_numpy(rows["inputs"]).long()
  targets = torch.from_numpy(rows["targets"]).long()
  weights = torch.from_numpy(rows["weights"])
  positions = torch.from_numpy(rows["positions"]).long()

  def step():
    logits = model(input_ids=inputs, position_ids=positions).logits.float()
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(),
                                           reduction="none")
    loss = (ce * weights.flatten()).sum() / weights.sum()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()

  for _ in range(2):
    step()
  t0 = time.perf_counter()
  for _ in range(steps):
    step()
  return rows["inputs"].size * steps / (time.perf_counter() - t0)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--modes", default="lora,full", help="comma-separated: lora, full")
  ap.add_argument("--hidden", type=int, default=256)
  ap.add_argument("--layers", type=int, default=4)
  ap.add_argument("--heads", type=int, default=8)
  ap.add_argument("--kv_heads", type=int, default=2)
  ap.add_argument("--vocab", type=int, default=1024)
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--seq", type=int, default=256)
  ap.add_argument("--steps", type=int, default=10)
  ap.add_argument("--rank", type=int, default=8)
  ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
  args = ap.parse_args()

  import torch

  torch.set_num_threads(args.threads)
  from automem.models.tiny import make_tiny_checkpoint

  base = make_tiny_checkpoint(
      os.path.join(tempfile.mkdtemp(prefix="bench_train_"), "base"), "qwen2",
      vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=4 * args.hidden,
      num_layers=args.layers, num_heads=args.heads, num_kv_heads=args.kv_heads,
      head_dim=args.hidden // args.heads)
  rows = _rows(args.vocab, args.batch, args.seq)
  import jax

  print(f"model: qwen2 hidden={args.hidden} layers={args.layers} vocab={args.vocab}; "
        f"batch {args.batch} x {args.seq} tokens; float32; jax {jax.__version__} on "
        f"{jax.default_backend()} ({jax.device_count()} devices, 1 used); torch "
        f"{torch.__version__} on CPU, {args.threads} threads")
  print(f"| {'mode':<5} | {'ours (JAX) tok/s':>17} | {'transformers+torch tok/s':>24} | "
        f"{'ratio':>6} |")
  print(f"|{'-' * 7}|{'-' * 19}|{'-' * 26}|{'-' * 8}|")
  for mode in args.modes.split(","):
    ours = bench_jax(base, mode, rows, args.steps, args.rank)
    peer = bench_torch(base, mode, rows, args.steps, args.rank)
    print(f"| {mode:<5} | {ours:>17.0f} | {peer:>24.0f} | {ours / peer:>5.2f}x |", flush=True)


if __name__ == "__main__":
  main()
