"""The sweep: two tiny variants run into sibling workdirs, a failing one recorded, one
comparison table over them; the dry run prints the plan and the cluster commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from automem.pipeline import stages
from automem.pipeline.sweep import cluster_commands, run_sweep, sweep_plan, workdirs
from automem.report import compare_workdirs
from experiments.configs.automem import get_config
from tests.pipeline.conftest import pipeline_config
from tests.rollout.test_evaluate_e2e import local_client

pytestmark = pytest.mark.slow
TINY = "games=crafter,episodes=1,steps=2"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_variant(root: str, variant: str):
  """The variant's own choices (stages skipped, prompt layout) on the tests' compact config."""
  real = get_config(f"{TINY},{variant}")
  config = pipeline_config(root, TINY)
  config.eval.agent.layout = real.eval.agent.layout
  config.skip, config.artifacts.structure = real.skip, ""
  config.stages = "loop2" if real.ablation == "training_only" else "v0"  # Loop 2 alone there
  return config


def test_sweep_runs_variants_into_sibling_workdirs_and_compares_them(tmp_path, rollout_engine,
                                                                    monkeypatch):
  def broken_loop2(ctx):
    raise RuntimeError("loop2 failed")

  monkeypatch.setitem(stages._LOOPS, "loop2", broken_loop2)
  root = str(tmp_path / "sweep")
  plan = sweep_plan(["ablation=none", "layout=paper", "ablation=training_only"], root)
  assert [os.path.basename(e.workdir) for e in plan] == [
      "ablation-none", "layout-paper", "ablation-training_only"]
  results = run_sweep(plan, lambda v: tiny_variant(root, v),
                      clients=lambda: {"base": local_client(rollout_engine)})
  assert "results" in results["ablation=none"] and "results" in results["layout=paper"]
  # A failing variant (here Loop 2) is recorded with its reason; the others are unaffected.
  assert results["ablation=training_only"]["error"].startswith("RuntimeError")
  with open(os.path.join(plan[1].workdir, "v0", "config.json")) as f:
    assert json.load(f)["agent"]["layout"] == "paper"

  table = compare_workdirs(workdirs(plan), root, seed_set="")
  rows = table["games"]["crafter"]
  assert [(r["variant"], r["version"], r["n"]) for r in rows] == [
      ("ablation=none", "v0", 1), ("layout=paper", "v0", 1)]
  assert table["missing"] == ["ablation=training_only"]
  with open(os.path.join(root, "comparison.md")) as f:
    md = f.read()
  assert "| ablation=none | v0 | 1 |" in md and "Not run yet: ablation=training_only" in md
  # The report entry point over several workdirs writes the same table.
  out = subprocess.run(
      [sys.executable, "-m", "experiments.report", plan[0].workdir, plan[1].workdir,
       f"--out={tmp_path / 'cmp'}", "--seed_set="],
      cwd=ROOT, capture_output=True, text=True, timeout=120, check=True).stdout
  assert "| ablation-none | v0 | 1 |" in out and "| layout-paper | v0 | 1 |" in out
  assert os.path.isfile(tmp_path / "cmp" / "comparison.json")
  # A rerun resumes: every stage is done, nothing is played (no clients are given).
  again = run_sweep(plan[:2], lambda v: tiny_variant(root, v))
  assert again["ablation=none"]["results"] == results["ablation=none"]["results"]


def test_dry_run_prints_the_plan_and_one_job_per_variant(tmp_path):
  root = str(tmp_path / "plan")
  out = subprocess.run(
      [sys.executable, "-m", "experiments.sweep", "--dry_run", f"--root={root}",
       "--variant=paper,ablation=structure_only", "--variant=paper,layout=paper"],
      cwd=ROOT, capture_output=True, text=True, timeout=120, check=True).stdout
  assert f"launch/slurm_automem.sbatch experiments/configs/automem.py:paper,ablation=" \
         f"structure_only {root}/paper__ablation-structure_only" in out
  assert "launch/tpu_pod_automem.sh experiments/configs/automem.py:paper,layout=paper" in out
  assert not os.path.exists(root)  # nothing ran
  env = {**os.environ, "DRY_RUN": "1", "CKPT": "/ckpt/m", "TPU_NAME": "t", "ZONE": "z"}
  slurm = subprocess.run(["launch/slurm_automem.sbatch", "experiments/configs/automem.py:paper",
                          "/w"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
                         check=True).stdout
  assert "launch/sglang_server.sh --model-path /ckpt/m" in slurm and "--enable-lora" in slurm
  assert "--max-lora-rank 64" in slurm and "--max-loras-per-batch 4" in slurm
  assert "python -m experiments.automem --config=experiments/configs/automem.py:paper" in slurm
  tpu = subprocess.run(["launch/tpu_pod_automem.sh", "experiments/configs/automem.py:paper", "/w"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
                       check=True).stdout
  assert "--worker=0" in tpu and "llm.backend=local" in tpu
  with pytest.raises(ValueError, match="same workdir"):
    sweep_plan(["ablation=both", "ablation=both"], root)
  assert len(cluster_commands(sweep_plan(["ablation=both"], root))["slurm"]) == 1
