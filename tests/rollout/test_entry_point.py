"""`python -m experiments.evaluate` end to end on a tiny config, then resumed."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _run(workdir: pathlib.Path, cache: pathlib.Path) -> subprocess.CompletedProcess:
  env = dict(os.environ)
  env.update(AUTOMEM_CACHE=str(cache), JAX_PLATFORMS="cpu", XLA_FLAGS="",
             JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir or "")
  return subprocess.run(
      [sys.executable, "-m", "experiments.evaluate",
       "--config=experiments/configs/evaluate.py:games=minihack,episodes=1,steps=2",
       "--config.llm.local.tiny_pretrain_steps=0", "--config.progress=False",
       f"--workdir={workdir}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=400, check=False)


def test_evaluate_entry_point_writes_a_run_dir_and_resumes(tmp_path):
  workdir, cache = tmp_path / "run", tmp_path / "cache"
  first = _run(workdir, cache)
  assert first.returncode == 0, first.stderr[-3000:]
  assert f"run directory: {workdir}" in first.stdout

  config = json.loads((workdir / "config.json").read_text())
  assert config["games"] == "minihack"  # the variant and the override were applied
  assert config["llm"]["local"]["tiny_pretrain_steps"] == 0
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["episodes_finished"] == summary["episodes_planned"] == 1
  (trajectory,) = (workdir / "trajectories").glob("*.jsonl")
  records = [json.loads(line) for line in trajectory.read_text().splitlines()]
  assert records[0]["type"] == "header" and records[-1]["type"] == "end"
  assert records[-1]["stats"]["length"] == 2
  assert any(r["type"] == "turn" for r in records)

  # The same workdir again: the finished episode is kept, not replayed.
  before = trajectory.read_text()
  second = _run(workdir, cache)
  assert second.returncode == 0, second.stderr[-3000:]
  assert trajectory.read_text() == before
