"""Whole jobs: resume equals not stopping, export, metrics; the entry point on two processes."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from automem.models.checkpoint import load_hf_checkpoint
from automem.models.lora import load_lora_adapter
from automem.proficiency import PreemptionFlag, read_metrics, train
from experiments.configs import train_proficiency

ROOT = pathlib.Path(__file__).resolve().parents[2]
STEPS = 6
# Small enough for CPU, big enough to exercise every path: a (1, 2, 2) mesh, accumulation,
# a mid-run eval, one forced checkpoint, LoRA export.
VARIANT = f"steps={STEPS},row_length=128,micro_batch=2,accum=2,rank=4,fsdp=2,tensor=2"
OVERRIDES = {"mesh.data": 1, "eval_every": 3, "checkpoint.every": 100,
             "data.synthetic_episodes": 8, "data.synthetic_steps": 5, "batch.eval_batch": 4}


def _config(base: str):
  cfg = train_proficiency.get_config(VARIANT)
  cfg.model.checkpoint = base
  for key, value in OVERRIDES.items():
    node = cfg
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return cfg


def _train_losses(workdir) -> dict[int, float]:
  return {m["step"]: m["loss"] for m in read_metrics(str(workdir)) if m["split"] == "train"}


@pytest.fixture(scope="module")
def straight(tmp_path_factory, tiny_base):
  workdir = tmp_path_factory.mktemp("prof_straight")
  return workdir, train(_config(tiny_base), str(workdir))


def test_straight_run_trains_evaluates_and_exports(straight, tiny_base):
  workdir, summary = straight
  assert summary["finished"] and not summary["preempted"] and summary["step"] == STEPS
  losses = _train_losses(workdir)
  assert sorted(losses) == list(range(1, STEPS + 1))
  evals = [m for m in read_metrics(str(workdir)) if m["split"] == "eval"]
  assert [m["step"] for m in evals] == [3, STEPS] and 0 <= evals[-1]["accuracy"] <= 1
  # Learning, judged on the same rows (each train loss is a different batch's).
  assert evals[-1]["loss"] < evals[0]["loss"]
  assert summary["mesh"] == {"data": 1, "fsdp": 2, "tensor": 2}
  assert list(workdir.glob("tensorboard/events.out.tfevents.*"))
  stats = json.loads((workdir / "dataset" / "stats.json").read_text())
  assert stats["train"]["examples"] + stats["val"]["examples"] == 8 * 5
  # The adapter is a PEFT directory the models package (and so SGLang/peft) reads back.
  adapter = pathlib.Path(summary["export"])
  cfg = json.loads((adapter / "adapter_config.json").read_text())
  assert cfg["peft_type"] == "LORA" and cfg["r"] == 4
  tensors = load_file(str(adapter / "adapter_model.safetensors"))
  assert any(k.endswith("lora_B.weight") and np.abs(v).max() > 0 for k, v in tensors.items())
  model = load_lora_adapter(load_hf_checkpoint(tiny_base), str(adapter))
  assert model.layers[0].self_attn.q_proj.lora is not None
  for name in ("time_step_s", "time_data_s", "time_eval_s", "time_checkpoint_s"):
    assert summary[name] >= 0


def test_resume_gives_the_same_losses_as_not_stopping(straight, tiny_base, tmp_path):
  workdir, _ = straight
  cfg = _config(tiny_base)
  cfg.data.dir = str(workdir / "dataset")
  cfg.export.kind = "none"
  first = train(cfg, str(tmp_path), stop_after=3)
  assert first["preempted"] and first["step"] == 3
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()
                if p.name.isdigit()) == [3]
  # A run killed after its checkpoint had logged steps 4 and 5 (and half a line, and left
  # a temp file): the resume logs them again, so the file is cut back to step 3 first.
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 4, "split": "train", "loss": 9.0}\n{"step": 5, "split": "train", "lo')
  (tmp_path / "config.json.tmp999999999").write_text("{")
  second = train(cfg, str(tmp_path))
  assert second["finished"] and second["step"] == STEPS
  assert not (tmp_path / "config.json.tmp999999999").exists()
  steps = [m["step"] for m in read_metrics(str(tmp_path)) if m["split"] == "train"]
  assert steps == list(range(1, STEPS + 1))  # each step once, in order
  want, got = _train_losses(workdir), _train_losses(tmp_path)
  assert sorted(got) == list(range(1, STEPS + 1))
  np.testing.assert_allclose([got[s] for s in range(4, STEPS + 1)],
                             [want[s] for s in range(4, STEPS + 1)], rtol=1e-5)
  # A finished run re-run with the same workdir does no more steps.
  again = train(cfg, str(tmp_path))
  assert again["step"] == STEPS and len(_train_losses(tmp_path)) == STEPS
  # A dataset built with other settings is refused, not silently reused.
  cfg.data.row_length = 256
  with pytest.raises(ValueError, match="row_length"):
    train(cfg, str(tmp_path))


def test_sigterm_mid_run_saves_a_checkpoint_and_resume_matches(straight, tiny_base, tmp_path):
  workdir, _ = straight
  cfg = _config(tiny_base)
  cfg.data.dir = str(workdir / "dataset")
  cfg.export.kind = "none"
  metrics = tmp_path / "metrics.jsonl"
  stop = threading.Event()

  def preempt_after_first_step():
    while not stop.is_set():
      if metrics.exists() and '"train"' in metrics.read_text():
        os.kill(os.getpid(), signal.SIGTERM)
        return
      time.sleep(0.002)

  previous = signal.signal(signal.SIGTERM, lambda *_: None)  # safety net around the run
  watcher = threading.Thread(target=preempt_after_first_step, daemon=True)
  watcher.start()
  try:
    first = train(cfg, str(tmp_path))
  finally:
    stop.set()
    watcher.join()
    signal.signal(signal.SIGTERM, previous)
  assert first["preempted"] and 1 < first["step"] < STEPS, first["step"]
  saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert saved == [first["step"]]
  second = train(cfg, str(tmp_path))
  assert second["finished"]
  want, got = _train_losses(workdir), _train_losses(tmp_path)
  later = range(first["step"] + 1, STEPS + 1)
  np.testing.assert_allclose([got[s] for s in later], [want[s] for s in later], rtol=1e-5)


def test_sigterm_becomes_a_flag_for_the_train_loop():
  with PreemptionFlag() as flag:
    os.kill(os.getpid(), signal.SIGTERM)
    assert flag.raised
  assert signal.getsignal(signal.SIGTERM) is not flag._handle


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_entry_point_on_two_processes_matches_one_process(straight, tiny_base, tmp_path):
  """`python -m experiments.train_proficiency` as 2 processes x 2 CPU devices (gloo)."""
  workdir, _ = straight
  port = _free_port()
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
  env["JAX_COMPILATION_CACHE_DIR"] = str(jax.config.jax_compilation_cache_dir or "")
  flags = [f"--config={ROOT}/experiments/configs/train_proficiency.py:{VARIANT}",
           f"--workdir={tmp_path}", f"--config.model.checkpoint={tiny_base}",
           f"--config.data.dir={workdir / 'dataset'}",
           "--config.distributed.enabled=True",
           f"--config.distributed.coordinator_address=127.0.0.1:{port}",
           "--config.distributed.num_processes=2", "--config.distributed.timeout_s=60"]
  flags += [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
  procs = [subprocess.Popen(
      [sys.executable, "-m", "experiments.train_proficiency", *flags,
       f"--config.distributed.process_id={i}"], cwd=str(ROOT), env=env,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=400)[0])
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-4000:]
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["processes"] == 2 and summary["step"] == STEPS
  want, got = _train_losses(workdir), _train_losses(tmp_path)
  np.testing.assert_allclose([got[s] for s in range(1, STEPS + 1)],
                             [want[s] for s in range(1, STEPS + 1)], rtol=2e-4)
  want_eval = [m for m in read_metrics(str(workdir)) if m["split"] == "eval"][-1]
  got_eval = [m for m in read_metrics(str(tmp_path)) if m["split"] == "eval"][-1]
  assert got_eval["loss"] == pytest.approx(want_eval["loss"], rel=2e-4)
  # The adapter gathered from both processes equals the one-process adapter.
  want_t = load_file(str(workdir / "export" / "adapter" / "adapter_model.safetensors"))
  got_t = load_file(str(tmp_path / "export" / "adapter" / "adapter_model.safetensors"))
  assert sorted(got_t) == sorted(want_t)
  for k in want_t:
    np.testing.assert_allclose(got_t[k], want_t[k], rtol=1e-3, atol=1e-5)
