"""Loop 2 memory-proficiency fine-tuning (masked SFT on memory-command tokens).

Default (offline, CPU, about a minute on 2 cores): LoRA on the tiny random model from
`make_tiny_checkpoint` over tiny synthetic trajectories; the masked train and eval
loss falls from ~6.9 to ~2.7 in 60 steps and a PEFT adapter lands in
<workdir>/export/adapter.

  python -m experiments.train_proficiency \
      --config=experiments/configs/train_proficiency.py --workdir=runs/prof_tiny

Variants (after `train_proficiency.py:`, comma-separated):
  full                  full fine-tuning (export merged weights)
  checkpoint=PATH       base model (an HF Qwen2/Qwen3 dir); default: the tiny model
  selection=PATH        a selected_turns.jsonl written by decision selection
  trajectories=PATHS    run dirs / trajectory dirs / files, comma-separated with ';'
  steps=N  row_length=N  micro_batch=N  accum=N  rank=N  lr=X
  fsdp=N  tensor=N      mesh shape (data takes the rest)
  gpu                   bfloat16 compute, remat, chunked loss: for real models on accelerators
"""

from __future__ import annotations

import ml_collections

from automem.utils import parse_arg

VARIANTS = ("full", "gpu", "full,steps=5", "rank=4,accum=1,fsdp=2")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, full=False, gpu=False, checkpoint="", selection="", trajectories="",
                steps=60, row_length=256, micro_batch=4, accum=2, rank=8, lr=0.0, fsdp=-1,
                tensor=1)
  c = ml_collections.ConfigDict()
  c.finetune = "full" if a["full"] else "lora"  # "lora" (adapters only) or "full"
  c.steps = a["steps"]  # total optimizer steps (also the cosine decay length)
  c.log_every = 1  # write train metrics every N steps
  c.eval_every = 20  # eval on the validation split every N steps (0 = only at the end)
  c.loss_chunk = 128 if a["gpu"] else 0  # compute logits/CE in time chunks of N (0 = all at once)
  c.tensorboard = True  # also write TensorBoard events under <workdir>/tensorboard

  c.model = ml_collections.ConfigDict()
  c.model.checkpoint = a["checkpoint"]  # base HF checkpoint dir ("" = write the tiny model)
  c.model.tiny_family = "qwen2"  # family of the tiny model ("qwen2" | "qwen3")
  c.model.tiny_seed = 0  # seed of the tiny model's random weights
  # Untied output head for the tiny model: with tied 0.02-scale embeddings no adapter can
  # grow the logits, so LoRA would barely move the loss; an untied head can carry an adapter.
  c.model.tiny_tie_embeddings = False
  c.model.dtype = "bfloat16" if a["gpu"] else "float32"  # compute dtype
  c.model.frozen_dtype = "bfloat16"  # storage dtype of frozen (non-trained) weights
  c.model.remat = a["gpu"]  # rematerialise decoder layers in the backward pass

  c.lora = ml_collections.ConfigDict()
  c.lora.rank = a["rank"]  # adapter rank r
  c.lora.alpha = 2.0 * a["rank"]  # scale = alpha / r
  c.lora.target_modules = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                           "down_proj") + (() if a["checkpoint"] else ("lm_head",))
  # ^ projections that get adapters (lm_head only for the untied tiny model)
  c.lora.seed = 0  # adapter init seed

  c.data = ml_collections.ConfigDict()
  c.data.selection = a["selection"]  # selected_turns.jsonl ("" = all turns of `trajectories`)
  c.data.trajectories = a["trajectories"].replace(";", ",")  # comma-separated sources
  c.data.phases = ("log",)  # phases taken when there is no selection file
  c.data.synthetic_episodes = 24  # synthetic episodes when neither of the above is set
  c.data.synthetic_steps = 8  # LOG turns per synthetic episode
  c.data.dir = ""  # packed dataset dir ("" = <workdir>/dataset, built on first run)
  c.data.row_length = a["row_length"]  # tokens per packed row
  c.data.overflow = "truncate_left"  # long examples: "truncate_left" (prompt) or "drop"
  c.data.exclude_ops = ("ACTION",)  # ops never trained (the base model keeps the action)
  c.data.train_failed = False  # train commands that failed when executed
  c.data.append_eos = True  # end each completion with the end-of-turn token
  c.data.train_eos = False  # put loss weight on that end-of-turn token
  c.data.val_fraction = 0.15  # share of episodes held out for validation
  c.data.seed = 0  # episode split and per-epoch row shuffle

  c.batch = ml_collections.ConfigDict()
  c.batch.micro_batch = a["micro_batch"]  # rows per microbatch (global, over all devices)
  c.batch.accum_steps = a["accum"]  # microbatches per optimizer step
  c.batch.eval_batch = 8  # rows per eval batch (global)

  c.optim = ml_collections.ConfigDict()
  # Peak learning rate; the tiny random model needs far larger steps than a real one.
  c.optim.learning_rate = a["lr"] or (
      (1e-5 if a["full"] else 2e-4) if a["checkpoint"] else (1e-2 if a["full"] else 3e-2))
  c.optim.warmup_steps = 5  # linear warmup steps
  c.optim.end_lr_ratio = 0.1  # final lr / peak lr of the cosine decay
  c.optim.weight_decay = 0.0  # AdamW weight decay on matrices
  c.optim.b1 = 0.9  # Adam beta1
  c.optim.b2 = 0.99  # Adam beta2
  c.optim.eps = 1e-8  # Adam epsilon
  c.optim.clip_norm = 1.0  # global gradient-norm clip (0 = off)

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1 if a["fsdp"] != -1 else 1  # data-parallel axis (-1 = remaining devices)
  c.mesh.fsdp = a["fsdp"]  # FSDP axis: params sharded, batch split (-1 = remaining devices)
  c.mesh.tensor = a["tensor"]  # tensor-parallel axis

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every = 20  # save every N steps (and at the end or on SIGTERM)
  c.checkpoint.keep = 2  # checkpoints kept
  c.checkpoint.async_save = True  # save in the background while training continues

  c.export = ml_collections.ConfigDict()
  c.export.kind = "merged" if a["full"] else "lora"  # "lora" (PEFT adapter), "merged", "none"

  c.distributed = ml_collections.ConfigDict()
  c.distributed.enabled = False  # call jax.distributed.initialize (multi-host)
  c.distributed.coordinator_address = ""  # host:port ("" = env JAX_COORDINATOR_ADDRESS / auto)
  c.distributed.num_processes = 0  # 0 = env JAX_NUM_PROCESSES / auto-detect
  c.distributed.process_id = -1  # -1 = env JAX_PROCESS_ID / auto-detect
  c.distributed.timeout_s = 120  # initialization timeout
  return c
