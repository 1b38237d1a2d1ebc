"""Training throughput: our jitted Flax/optax step vs a transformers + PyTorch step, same model.

Both sides train the same random HF checkpoint (Qwen2 layout, written with our
`save_hf_checkpoint`) on the same random rows with the same loss (cross-entropy on
masked tokens), AdamW, LoRA (peft on the torch side) or full fine-tuning, one
optimizer step per batch. Reports training tokens/s (all row tokens, masked or
not; best of --repeats timed blocks, alternating between the two sides so both
see the same machine load), the ratio, and with --peak_tflops the
model-FLOPs utilisation of our step.

  python benchmarks/bench_train.py                  # small model, CPU, a few minutes
  python benchmarks/bench_train.py --modes=lora --steps=5 --hidden=128
  # on an accelerator: a Qwen2.5-0.5B-shaped model, bf16 compute, MFU against H100 bf16 peak
  python benchmarks/bench_train.py --preset=0.5b --dtype=bfloat16 --batch=8 --seq=2048 \
      --loss_chunk=512 --remat --peak_tflops=989 --torch_device=cuda
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout


def _rows(vocab: int, batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, vocab, (batch, seq + 1)).astype(np.int32)
  weights = (rng.random((batch, seq)) < 0.3).astype(np.float32)  # ~masked-SFT density
  return {"inputs": ids[:, :-1], "targets": ids[:, 1:], "weights": weights,
          "segment_ids": np.ones((batch, seq), np.int32),
          "positions": np.broadcast_to(np.arange(seq, dtype=np.int32), (batch, seq)).copy()}


PRESETS = {
    # name: (hidden, intermediate, layers, heads, kv_heads, vocab)
    "small": (256, 1024, 4, 8, 2, 1024),
    "0.5b": (896, 4864, 24, 14, 2, 151936),  # Qwen2.5-0.5B shapes
}


def write_model(path: str, hidden: int, inter: int, layers: int, heads: int, kv: int,
                vocab: int) -> str:
  from automem.models.checkpoint import save_hf_checkpoint
  from automem.models.tiny import tiny_config
  from automem.models.transformer import init_model

  cfg = tiny_config("qwen2", vocab, hidden_size=hidden, intermediate_size=inter,
                    num_layers=layers, num_heads=heads, num_kv_heads=kv,
                    head_dim=hidden // heads, tie_word_embeddings=True)
  save_hf_checkpoint(init_model(cfg), path)
  return path


def step_flops(mode: str, hidden: int, inter: int, layers: int, heads: int, kv: int, vocab: int,
               seq: int, tokens: int) -> float:
  """Model FLOPs of one step: 6 (full) or 4 (frozen base: no weight grads) per matmul weight
  per token, plus attention scores and values (forward 4*T*d per layer, x3 with backward)."""
  head_dim = hidden // heads
  matmul = layers * (hidden * (heads + 2 * kv) * head_dim + heads * head_dim * hidden
                     + 3 * hidden * inter) + vocab * hidden
  per_weight = 6 if mode == "full" else 4
  attention = 12 * layers * seq * heads * head_dim
  return float(tokens) * (per_weight * matmul + attention)


def bench_jax(base: str, mode: str, rows: dict[str, np.ndarray], steps: int, rank: int,
              dtype: str = "float32", remat: bool = False, loss_chunk: int = 0
              ) -> Callable[[], float]:
  """Builds and warms up our step; returns a function timing one block (tokens/s)."""
  import jax
  import jax.numpy as jnp

  from automem.models import sharding as shd
  from automem.models.checkpoint import load_hf_checkpoint
  from automem.models.lora import LoraConfig, apply_lora
  from automem.proficiency import OptimConfig, Trainer

  mesh = shd.make_mesh(1, 1, 1)
  model = load_hf_checkpoint(base, mesh, dtype=dtype, remat=remat)
  if mode == "lora":
    apply_lora(model, LoraConfig(rank=rank, alpha=2.0 * rank), mesh=mesh)
  trainer = Trainer(model, mesh, OptimConfig(learning_rate=1e-4, warmup_steps=0, total_steps=100),
                    finetune=mode, loss_chunk=loss_chunk,
                    frozen_dtype=jnp.float32 if dtype == "float32" else jnp.bfloat16)
  batch = {k: jax.device_put(v[None], trainer.batch_sharding) for k, v in rows.items()}
  state = trainer.init_state()
  for _ in range(2):  # compile + warm up
    state, m = trainer.step(state, batch)
  jax.block_until_ready(m)
  box = [state]

  def block() -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
      box[0], out = trainer.step(box[0], batch)
    jax.block_until_ready((box[0], out))
    return rows["inputs"].size * steps / (time.perf_counter() - t0)

  return block


def bench_torch(base: str, mode: str, rows: dict[str, np.ndarray], steps: int, rank: int,
                device: str = "cpu", dtype: str = "float32") -> Callable[[], float]:
  """The same for transformers + peft + torch.optim.AdamW."""
  import torch
  from transformers import AutoModelForCausalLM

  torch.manual_seed(0)
  # bf16 on the torch side is autocast over float32 master weights, like ours.
  model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).to(device)
  if mode == "lora":
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(model, LoraConfig(
        r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                        "down_proj"]))
  model.train()
  params = [p for p in model.parameters() if p.requires_grad]
  opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
  inputs = torch.from_numpy(rows["inputs"]).long().to(device)
  targets = torch.from_numpy(rows["targets"]).long().to(device)
  weights = torch.from_numpy(rows["weights"]).to(device)
  positions = torch.from_numpy(rows["positions"]).long().to(device)
  autocast = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16,
                            enabled=dtype == "bfloat16")

  def sync():
    if device.startswith("cuda"):
      torch.cuda.synchronize()

  def step():
    with autocast:
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
  sync()

  def block() -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
      step()
    sync()
    return rows["inputs"].size * steps / (time.perf_counter() - t0)

  return block


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--modes", default="lora,full", help="comma-separated: lora, full")
  ap.add_argument("--preset", default="small", choices=sorted(PRESETS),
                  help="model shape; --hidden etc. override it")
  ap.add_argument("--hidden", type=int)
  ap.add_argument("--layers", type=int)
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--seq", type=int, default=256)
  ap.add_argument("--steps", type=int, default=5, help="steps per timed block")
  ap.add_argument("--repeats", type=int, default=3, help="timed blocks; the best is reported")
  ap.add_argument("--rank", type=int, default=8)
  ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                  help="compute dtype (master weights stay float32)")
  ap.add_argument("--remat", action="store_true")
  ap.add_argument("--loss_chunk", type=int, default=0)
  ap.add_argument("--peak_tflops", type=float, default=0.0,
                  help="device peak (e.g. 989 for H100 bf16 dense) to print MFU")
  ap.add_argument("--torch_device", default="cpu", help="'cpu', 'cuda' or 'none' (skip peer)")
  ap.add_argument("--threads", default=f"1,{os.cpu_count() or 1}",
                  help="torch intra-op thread counts to try (comma-separated); its best counts "
                       "(on a busy machine 1 thread can beat all cores)")
  args = ap.parse_args()

  import torch

  threads = sorted({int(t) for t in args.threads.split(",")})
  hidden, inter, layers, heads, kv, vocab = PRESETS[args.preset]
  if args.hidden:
    hidden, inter = args.hidden, 4 * args.hidden
  layers = args.layers or layers
  base = write_model(os.path.join(tempfile.mkdtemp(prefix="bench_train_"), "base"), hidden,
                     inter, layers, heads, kv, vocab)
  rows = _rows(vocab, args.batch, args.seq)
  import jax

  print(f"model: qwen2 hidden={hidden} layers={layers} heads={heads}/{kv} vocab={vocab}; "
        f"batch {args.batch} x {args.seq} tokens; {args.dtype} compute, float32 master; "
        f"jax {jax.__version__} on {jax.default_backend()} (1 device used); torch "
        f"{torch.__version__} on {args.torch_device}, best of {threads} threads")
  peer_name = f"transformers+torch ({args.torch_device}) tok/s"
  print(f"| {'mode':<5} | {'ours (JAX) tok/s':>17} | {peer_name:>30} | {'ratio':>6} | "
        f"{'our MFU':>7} |")
  print(f"|{'-' * 7}|{'-' * 19}|{'-' * 32}|{'-' * 8}|{'-' * 9}|")
  for mode in args.modes.split(","):
    ours_block = bench_jax(base, mode, rows, args.steps, args.rank, args.dtype, args.remat,
                           args.loss_chunk)
    peer_block = (bench_torch(base, mode, rows, args.steps, args.rank, args.torch_device,
                              args.dtype) if args.torch_device != "none" else None)
    # Alternate timed blocks so both sides see the same machine load; keep each side's best.
    ours, peer = 0.0, float("nan") if peer_block is None else 0.0
    for _ in range(args.repeats):
      ours = max(ours, ours_block())
      if peer_block is not None:
        for t in threads:
          torch.set_num_threads(t)
          peer = max(peer, peer_block())
    mfu = "-"
    if args.peak_tflops:
      flops = step_flops(mode, hidden, inter, layers, heads, kv, vocab, args.seq,
                         rows["inputs"].size) / rows["inputs"].size * ours
      mfu = f"{100 * flops / (args.peak_tflops * 1e12):.1f}%"
    print(f"| {mode:<5} | {ours:>17.0f} | {peer:>30.0f} | {ours / peer:>5.2f}x | {mfu:>7} |",
          flush=True)


if __name__ == "__main__":
  main()
