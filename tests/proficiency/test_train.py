"""Train step: the loss falls, masked targets do not matter, sharding and accumulation are exact."""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from automem.models import sharding as shd
from automem.models.checkpoint import load_hf_checkpoint
from automem.models.lora import ALL_TARGETS, LoraConfig, apply_lora
from automem.proficiency import batches, dataset, export, steps
from automem.proficiency.trainer import Trainer
from experiments.configs import train_proficiency

OPTIM = steps.OptimConfig(learning_rate=3e-2, warmup_steps=1, total_steps=20, b2=0.99)


def _trainer(base: str, mesh, finetune: str = "lora", optim=OPTIM, dtype="float32") -> Trainer:
  model = load_hf_checkpoint(base, mesh, dtype=dtype)
  if finetune == "lora":
    apply_lora(model, LoraConfig(rank=4, alpha=8.0, targets=(*ALL_TARGETS, "lm_head")), seed=0,
               mesh=mesh)
  return Trainer(model, mesh, optim, finetune=finetune, frozen_dtype=jnp.float32)


@pytest.fixture(scope="module")
def rows(packed):
  return {k: np.asarray(v) for k, v in dataset.load_split(packed[0], "train").items()}


def _batch(rows, step, accum=2, micro=4, sharding=None):
  src = batches.BatchSource(rows, accum, micro, seed=0, sharding=sharding)
  return src.global_batch_arrays(step)


def _close(a, b, rtol=2e-4, atol=2e-5):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(
      np.asarray(x, np.float32), np.asarray(y, np.float32), rtol=rtol, atol=atol), a, b)


@pytest.fixture(scope="module")
def single(tiny_base):
  return _trainer(tiny_base, shd.make_mesh(1, 1, 1))


def test_lora_loss_falls_and_only_adapters_train(single, rows):
  frozen_before = jax.tree.map(np.asarray, single.frozen)
  state = single.init_state()
  p0 = jax.tree.map(np.asarray, state.params)
  losses = []
  batch = _batch(rows, 0, sharding=single.batch_sharding)
  for _ in range(12):
    state, m = single.step(state, batch)
    losses.append(float(m["loss"]))
  assert np.isfinite(losses).all()
  assert losses[-1] < 0.6 * losses[0], losses
  assert all("lora_a" in str(path) or "lora_b" in str(path)
             for path, _ in jax.tree_util.tree_leaves_with_path(state.params))
  _close(frozen_before, single.frozen, rtol=0, atol=0)  # the base never moves
  moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - b).max()), state.params, p0)
  assert max(jax.tree.leaves(moved)) > 0
  assert float(m["grad_norm"]) > 0 and float(m["update_norm"]) > 0 and int(state.step) == 12


def test_targets_under_zero_weight_leave_the_step_unchanged(single, rows):
  batch = {k: np.asarray(v) for k, v in _batch(rows, 0).items()}
  rng = np.random.default_rng(0)
  noise = rng.integers(0, 1000, batch["targets"].shape).astype(np.int32)
  other = dict(batch, targets=np.where(batch["weights"] > 0, batch["targets"], noise))
  flipped = dict(batch, targets=np.where(batch["weights"] > 0, (batch["targets"] + 1) % 1000,
                                         batch["targets"]))
  assert (other["targets"] != batch["targets"]).any()
  out = {}
  for name, b in (("orig", batch), ("other", other), ("flipped", flipped)):
    state, m = single.step(single.init_state(), {
        k: jax.device_put(v, single.batch_sharding) for k, v in b.items()})
    out[name] = jax.device_get((m["grad_norm"], m["loss"], state.params))
  _close(out["orig"], out["other"], rtol=0, atol=0)  # bit-identical gradients and update
  assert out["flipped"][0] != out["orig"][0]  # ... while a trained target does matter


def test_sharded_step_on_8_devices_equals_single_device(single, tiny_base, rows):
  assert jax.device_count() >= 8
  mesh = shd.make_mesh(data=2, fsdp=2, tensor=2)
  sharded = _trainer(tiny_base, mesh)
  shardings = {str(s.spec) for s in jax.tree.leaves(sharded.param_shardings)}
  assert any("tensor" in s for s in shardings), shardings  # adapters really are split
  s1, s8 = single.init_state(), sharded.init_state()
  for step in range(2):
    s1, m1 = single.step(s1, _batch(rows, step, sharding=single.batch_sharding))
    s8, m8 = sharded.step(s8, _batch(rows, step, sharding=sharded.batch_sharding))
    _close(jax.device_get(m1), jax.device_get(m8))
  _close(jax.device_get(s1.params), jax.device_get(s8.params))


def test_accumulation_equals_one_big_batch(single, rows):
  # `single.step` runs 2 microbatches of 4; the same 8 rows as one microbatch must agree.
  step = jax.jit(functools.partial(steps.train_step, single.graphdef, single.tx, single.schedule,
                                   0))
  state = single.init_state()
  small = _batch(rows, 0, sharding=single.batch_sharding)
  big = {k: v.reshape(1, 8, -1) for k, v in small.items()}
  s_big, m_big = step(jax.tree.map(jnp.copy, state), single.frozen, big)
  s_small, m_small = single.step(state, small)
  _close(jax.device_get(m_big), jax.device_get(m_small))
  _close(jax.device_get(s_big.params), jax.device_get(s_small.params))


def test_chunked_loss_matches_full_logits(single, rows):
  b = {k: jax.device_put(np.asarray(v)[0], single.eval_sharding)
       for k, v in _batch(rows, 0).items()}
  params = single.init_state().params
  full = single._eval(params, single.frozen, b)  # compiled with loss_chunk=0
  chunked = jax.jit(functools.partial(steps.eval_step, single.graphdef, 32))(
      params, single.frozen, b)
  _close(full, chunked)


def test_full_finetuning_in_bf16_compute_with_fp32_master_weights(tiny_base, rows, tmp_path):
  full = _trainer(tiny_base, shd.make_mesh(1, 1, 1), "full",
                  steps.OptimConfig(learning_rate=1e-2, warmup_steps=1, total_steps=10),
                  dtype="bfloat16")
  assert full.num_frozen == 0 and full.num_trainable > 100_000
  state = full.init_state()
  losses = []
  batch = _batch(rows, 0, sharding=full.batch_sharding)
  for _ in range(8):
    state, m = full.step(state, batch)
    losses.append(float(m["loss"]))
  assert losses[-1] < losses[0] - 1.0, losses
  assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}
  assert {x.dtype for x in jax.tree.leaves(state.opt_state) if x.ndim} == {jnp.dtype(jnp.float32)}
  merged = full.merged_model(state.params)
  assert isinstance(merged, nnx.Module) and merged.config.dtype == jnp.bfloat16
  # Export as a merged HF checkpoint; it loads back with exactly the trained weights.
  cfg = train_proficiency.get_config("full")
  path = export.export_trained(cfg, full, state.params, tiny_base, str(tmp_path / "export"))
  assert os.path.exists(os.path.join(path, "tokenizer.json"))
  back = nnx.to_pure_dict(nnx.state(load_hf_checkpoint(path), nnx.Param))
  _close(back, jax.device_get(state.params), rtol=0, atol=0)


def test_bad_finetune_mode_and_missing_adapters_are_clear_errors(tiny_base):
  mesh = shd.make_mesh(1, 1, 1)
  with pytest.raises(ValueError, match="finetune must be"):
    Trainer(load_hf_checkpoint(tiny_base, mesh), mesh, OPTIM, finetune="qlora")
  with pytest.raises(ValueError, match="apply_lora"):
    Trainer(load_hf_checkpoint(tiny_base, mesh), mesh, OPTIM, finetune="lora")


def test_non_finite_loss_stops_with_a_clear_message(tmp_path):
  from tqdm import tqdm

  from automem.proficiency.metrics import MetricsWriter
  from automem.proficiency.run import _Logger

  log = _Logger(MetricsWriter(str(tmp_path), tensorboard=False), tqdm(disable=True), 1)
  log(1, {"loss": 1.0, "grad_norm": 1.0, "tokens": 4.0, "accuracy": 0.5})
  with pytest.raises(FloatingPointError, match=r"non-finite training loss nan .* step 2"):
    log(2, {"loss": float("nan"), "grad_norm": 1.0, "tokens": 4.0, "accuracy": 0.5})
