"""`train(config, workdir)`: one Loop-2 fine-tuning job from trajectories to an exported adapter.

Workdir layout (re-running with the same workdir resumes from the last checkpoint):

  config.json          the config of the run
  base_model/          only when the config asks for the tiny offline model
  synthetic/           only when the config asks for synthetic trajectories
  dataset/             packed rows (train/, val/) and stats.json, unless config.data.dir is set
  checkpoints/         orbax: params, optimizer, data position per saved step
  metrics.jsonl        train and eval metrics; tensorboard/ holds the same as events
  export/              PEFT LoRA adapter (adapter/) or merged HF checkpoint (merged/)
  summary.json         final metrics, parameter counts and where the time went
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from tqdm import tqdm

from automem.models import sharding as shd
from automem.models.checkpoint import load_hf_checkpoint
from automem.proficiency import batches, dataset, export, selection, synthetic
from automem.proficiency.checkpointing import Checkpointer, PreemptionFlag
from automem.proficiency.metrics import MetricsWriter, PhaseTimer
from automem.proficiency.steps import OptimConfig
from automem.proficiency.trainer import Trainer
from automem.utils.errors import InputError
from automem.utils.files import sweep_stale_tmp


def check_config(config: Any) -> None:
  """Refuses values a run cannot use, naming the field or file (`InputError`)."""
  for field, value in (("steps", config.steps), ("batch.micro_batch", config.batch.micro_batch),
                       ("batch.accum_steps", config.batch.accum_steps),
                       ("batch.eval_batch", config.batch.eval_batch),
                       ("data.row_length", config.data.row_length),
                       ("log_every", config.log_every), ("checkpoint.every", config.checkpoint.every),
                       ("checkpoint.keep", config.checkpoint.keep)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise InputError(f"config.{field}", f"must be a whole number >= 1, got {value!r}")
  if config.finetune not in ("lora", "full"):
    raise InputError("config.finetune", f"must be 'lora' or 'full', got {config.finetune!r}")
  if config.export.kind not in ("lora", "merged", "none"):
    raise InputError("config.export.kind", f"must be lora, merged or none, got "
                     f"{config.export.kind!r}")
  if not 0 <= config.data.val_fraction < 1:
    raise InputError("config.data.val_fraction", f"must be in [0, 1), got "
                     f"{config.data.val_fraction}")
  if config.model.checkpoint and not os.path.isfile(
      os.path.join(config.model.checkpoint, "config.json")):
    raise InputError("config.model.checkpoint",
                     f"{config.model.checkpoint} is not a checkpoint dir (no config.json)")
  if config.data.selection and not os.path.isfile(config.data.selection):
    raise InputError("config.data.selection", f"{config.data.selection}: no such file")
  for src in (p for p in config.data.trajectories.split(",") if p):
    if not os.path.exists(src):
      raise InputError("config.data.trajectories", f"{src}: no such file or directory")


def initialize_distributed(cfg: Any) -> None:
  """`jax.distributed.initialize` from the config, falling back to JAX_* environment variables.

  Empty fields are left to jax's cluster auto-detection (SLURM, TPU pods, ...).
  """
  if not cfg.enabled or jax.distributed.is_initialized():
    return
  addr = cfg.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
  nproc = cfg.num_processes if cfg.num_processes > 0 else int(
      os.environ.get("JAX_NUM_PROCESSES", "0")) or None
  pid = cfg.process_id if cfg.process_id >= 0 else (
      int(os.environ["JAX_PROCESS_ID"]) if "JAX_PROCESS_ID" in os.environ else None)
  jax.distributed.initialize(coordinator_address=addr, num_processes=nproc, process_id=pid,
                             initialization_timeout=cfg.timeout_s)
  logging.info("process %d of %d; %d local and %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def prepare_base_model(cfg: Any, workdir: str) -> str:
  """The base checkpoint dir; writes the tiny offline model when none is configured."""
  if cfg.checkpoint:
    return cfg.checkpoint
  from automem.models.tiny import make_tiny_checkpoint

  path = os.path.join(workdir, "base_model")
  if jax.process_index() == 0 and not os.path.exists(os.path.join(path, "config.json")):
    make_tiny_checkpoint(path, cfg.tiny_family, seed=cfg.tiny_seed,
                         tie_word_embeddings=cfg.tiny_tie_embeddings)
  _sync("base_model")
  return path


def prepare_dataset(cfg: Any, base_model: str, workdir: str) -> str:
  """Builds the packed dataset once (process 0) unless `cfg.dir` already holds one."""
  data_dir = cfg.dir or os.path.join(workdir, "dataset")
  dcfg = dataset_config(cfg)
  stats_file = os.path.join(data_dir, "stats.json")
  if os.path.exists(stats_file):
    with open(stats_file) as f:
      built = json.load(f).get("config", {})
    want = json.loads(json.dumps(dataclasses.asdict(dcfg)))
    diff = {k: (built.get(k), v) for k, v in want.items() if built.get(k) != v}
    if diff:
      raise ValueError(f"dataset {data_dir} was built with other settings (built, wanted): "
                       f"{diff}; delete it or point config.data.dir elsewhere")
    return data_dir
  if jax.process_index() == 0:
    if cfg.selection:
      refs = selection.read_selected_turns(cfg.selection)
    else:
      sources = [p for p in cfg.trajectories.split(",") if p]
      if not sources:
        if cfg.synthetic_episodes <= 0:
          raise ValueError("config.data needs a selection file, trajectories or "
                           "synthetic_episodes > 0")
        sdir = os.path.join(workdir, "synthetic")
        synthetic.write_synthetic_trajectories(sdir, cfg.synthetic_episodes, cfg.synthetic_steps,
                                               seed=cfg.seed)
        sources = [sdir]
      refs = selection.select_log_turns(sources, phases=tuple(cfg.phases))
    turns = selection.load_turns(refs)
    tok = dataset.ModelChatTokenizer.from_pretrained(base_model)
    _, stats = dataset.build_dataset(turns, tok, dcfg, data_dir)
    logging.info("dataset %s: %s", data_dir, json.dumps({k: stats[k] for k in ("train", "val")}))
  _sync("dataset")
  return data_dir


def dataset_config(cfg: Any) -> dataset.DatasetConfig:
  """The `DatasetConfig` of a `config.data` section."""
  return dataset.DatasetConfig(
      row_length=cfg.row_length, overflow=cfg.overflow, exclude_ops=tuple(cfg.exclude_ops),
      train_failed=cfg.train_failed, append_eos=cfg.append_eos, train_eos=cfg.train_eos,
      val_fraction=cfg.val_fraction, seed=cfg.seed)


def optim_config(config: Any) -> OptimConfig:
  """The `OptimConfig` of a job config (its `optim` section and `steps`)."""
  return OptimConfig(**config.optim.to_dict(), total_steps=config.steps)


def build_trainer(config: Any, base_model: str, mesh: jax.sharding.Mesh) -> Trainer:
  """Loads the base model on the mesh, adds LoRA adapters if asked, wraps it in a Trainer."""
  m = config.model
  model = load_hf_checkpoint(base_model, mesh, dtype=m.dtype, param_dtype="float32",
                             remat=m.remat)
  if config.finetune == "lora":
    model = export.add_lora(model, config.lora, mesh)
  optim = optim_config(config)
  return Trainer(model, mesh, optim, finetune=config.finetune,
                 frozen_dtype=jnp.dtype(m.frozen_dtype), loss_chunk=config.loss_chunk)


class _Logger:
  """Turns fetched step metrics into log lines, metrics rows and the progress bar."""

  def __init__(self, writer: MetricsWriter, bar: tqdm, log_every: int):
    self.writer, self.bar, self.log_every = writer, bar, log_every
    self.last_time = time.perf_counter()
    self.last: dict[str, float] = {}

  def __call__(self, step: int, metrics: Any) -> None:
    m = {k: float(v) for k, v in jax.device_get(metrics).items()}
    if not math.isfinite(m["loss"]) or not math.isfinite(m["grad_norm"]):
      raise FloatingPointError(
          f"non-finite training loss {m['loss']} / grad norm {m['grad_norm']} at step {step}; "
          "lower optim.learning_rate, check the data, or resume from an earlier checkpoint")
    now = time.perf_counter()
    dt = max(now - self.last_time, 1e-9)
    self.last_time = now
    m["steps_per_s"] = 1.0 / dt
    m["tokens_per_s"] = m["tokens"] / dt
    self.last = m
    self.bar.update(1)
    self.bar.set_postfix(loss=f"{m['loss']:.4f}", acc=f"{m['accuracy']:.3f}")
    if step % self.log_every == 0:
      self.writer.write(step, "train", m)


def train(config: Any, workdir: str, *, stop_after: int | None = None) -> dict[str, Any]:
  """Runs (or resumes) one fine-tuning job; returns the run summary.

  Args:
    config: see experiments/configs/train_proficiency.py.
    workdir: run directory (see the module docstring).
    stop_after: stop (with a checkpoint) once this step is reached, as a preemption would.
  """
  check_config(config)
  initialize_distributed(config.distributed)
  workdir = os.path.abspath(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise InputError("--workdir", f"{workdir} is not a writable directory: {e}") from None
  sweep_stale_tmp(workdir)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  timer = PhaseTimer()
  with timer("setup"):
    base_model = prepare_base_model(config.model, workdir)
    data_dir = prepare_dataset(config.data, base_model, workdir)
    mesh = shd.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
    trainer = build_trainer(config, base_model, mesh)
  logging.info("mesh %s; %d trainable and %d frozen parameters", dict(mesh.shape),
               trainer.num_trainable, trainer.num_frozen)

  b = config.batch
  dp = mesh.shape["data"] * mesh.shape["fsdp"]
  if b.micro_batch % dp or b.eval_batch % dp:
    raise InputError("config.batch.micro_batch",
                     f"batch.micro_batch ({b.micro_batch}) and batch.eval_batch "
                     f"({b.eval_batch}) must be multiples of the data-parallel size {dp} "
                     f"(mesh {dict(mesh.shape)})")
  source = batches.BatchSource(dataset.load_split(data_dir, "train"), b.accum_steps,
                               b.micro_batch, config.data.seed, trainer.batch_sharding)
  val_rows = dataset.load_split(data_dir, "val")
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=config.checkpoint.keep,
                      save_every=config.checkpoint.every, async_save=config.checkpoint.async_save)
  with timer("restore"):
    start = ckpt.latest_step()
    if start is None:
      state, start = trainer.init_state(), 0
    else:
      abstract = trainer.abstract_state()
      params, opt_state, data = ckpt.restore(start, abstract.params, abstract.opt_state)
      step0 = jax.make_array_from_callback((), trainer.replicated,
                                           lambda _: np.asarray(start, np.int32))
      state = abstract.replace(step=step0, params=params, opt_state=opt_state)
      if data.get("seed") != config.data.seed or data.get("rows") != source.n:
        logging.warning("checkpoint data position %s does not match this dataset (%d rows, "
                        "seed %d); continuing from step %d", data, source.n, config.data.seed,
                        start)
      logging.info("resumed from step %d", start)

  def data_item(step: int) -> dict[str, Any]:
    pos = source.position(step)
    return {"step": step, "epoch": pos.epoch, "batch_in_epoch": pos.batch_in_epoch,
            "seed": pos.seed, "rows": source.n, "dataset": data_dir}

  def evaluate(step: int) -> dict[str, float]:
    if val_rows["inputs"].shape[0] == 0:
      return {}
    with timer("eval"):
      res = trainer.evaluate(state.params, batches.eval_batches(
          val_rows, b.eval_batch, trainer.eval_sharding))
    writer.write(step, "eval", res)
    logging.info("step %d eval: %s", step, res)
    return res

  writer = MetricsWriter(workdir, tensorboard=config.tensorboard)
  dropped = writer.truncate_after(start)  # steps after the checkpoint are played again
  if dropped:
    logging.info("metrics.jsonl: dropped %d line(s) logged after step %d", dropped, start)
  bar = tqdm(total=config.steps, initial=start, desc="train", dynamic_ncols=True,
             disable=jax.process_index() != 0)
  try:
    total = config.steps
    end = total if stop_after is None else min(total, stop_after)
    preempted = False
    eval_res: dict[str, float] = {}
    log = _Logger(writer, bar, config.log_every)
    pending: tuple[int, Any] | None = None
    saved = start
    with PreemptionFlag() as flag:
      step = start
      while step < end:
        with timer("data"):
          batch = source.global_batch_arrays(step)
        with timer("step"):
          state, metrics = trainer.step(state, batch)
        step += 1
        if pending is not None:  # fetch step N-1 after dispatching step N
          with timer("fetch"):
            log(*pending)
        pending = (step, metrics)
        if config.eval_every and step % config.eval_every == 0 and step < total:
          log(*pending)
          pending = None
          eval_res = evaluate(step)
        with timer("checkpoint"):
          if ckpt.save(step, state.params, state.opt_state, data_item(step)):
            saved = step
        if flag.raised or ckpt.reached_preemption(step):
          preempted = True
          break
      if pending is not None:
        log(*pending)
      with timer("checkpoint"):
        if step != saved:
          ckpt.save(step, state.params, state.opt_state, data_item(step), force=True)
        ckpt.wait()
    finished = step >= total
    if finished:
      eval_res = evaluate(step)
    exported = None
    if finished and config.export.kind != "none":
      with timer("export"):
        exported = export.export_trained(config, trainer, state.params, base_model,
                                         os.path.join(workdir, "export"))
  finally:  # also on a NaN stop: finish pending saves, flush events
    bar.close()
    ckpt.close()
    writer.close()
  summary = {
      "step": step, "finished": finished, "preempted": preempted or (not finished),
      "train": log.last, "eval": eval_res, "export": exported,
      "trainable_params": trainer.num_trainable, "frozen_params": trainer.num_frozen,
      "mesh": dict(mesh.shape), "processes": jax.process_count(), **timer.summary(),
  }
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2, default=lambda x: np.asarray(x).tolist())
  return summary
