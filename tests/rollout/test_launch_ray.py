"""launch/slurm_ray_eval.sbatch and tpu_pod_ray_eval.sh build the commands they document
(DRY_RUN=1, with stand-ins for SLURM's `scontrol` and `srun` on PATH)."""

from __future__ import annotations

import os
import pathlib
import shlex
import subprocess

from experiments.configs.evaluate import get_config

LAUNCH = pathlib.Path(__file__).resolve().parents[2] / "launch"


def dry_run(script: str, args: list[str], env: dict[str, str]) -> list[list[str]]:
  out = subprocess.run(["bash", str(LAUNCH / script), *args], capture_output=True, text=True,
                       timeout=30, check=False, cwd=LAUNCH.parent,
                       env={"PATH": os.environ["PATH"], "DRY_RUN": "1", **env})
  assert out.returncode == 0, out.stderr
  return [shlex.split(line) for line in out.stdout.splitlines() if line.strip()]


def value(argv: list[str], flag: str) -> str:
  return next(a.split("=", 1)[1] for a in argv if a.startswith(flag + "="))


def test_slurm_recipe_starts_servers_ray_nodes_and_the_driver(tmp_path):
  (tmp_path / "scontrol").write_text("#!/bin/sh\nprintf 'gpu1\\ngpu2\\ngpu3\\n'\n")
  (tmp_path / "srun").write_text("#!/bin/sh\necho 10.1.2.3\n")  # `hostname --ip-address`
  for f in ("scontrol", "srun"):
    (tmp_path / f).chmod(0o755)
  cmds = dry_run("slurm_ray_eval.sbatch", ["/ckpt/Q", "/shared/runs/e", "--config.seed_offset=5"],
                 {"PATH": f"{tmp_path}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "gpu[1-3]",
                  "RAY_HEAD_WAIT_S": "0"})
  by_kind = {("sglang" if "launch/sglang_server.sh" in c else "head" if "--head" in c
              else "driver" if c[0] == "python" else "workers"): c for c in cmds}
  assert set(by_kind) == {"sglang", "head", "workers", "driver"}
  assert by_kind["sglang"][by_kind["sglang"].index("--dp") + 1] == "2"  # 8 GPUs / tp 4
  assert "--nodes=3" in by_kind["sglang"] and "--nodes=2" in by_kind["workers"]
  assert "--exclude=gpu1" in by_kind["workers"] and "-w" in by_kind["head"]
  driver = by_kind["driver"]
  assert value(driver, "--config.ray.address") == "10.1.2.3:6379"
  assert value(driver, "--config.llm.sglang.endpoints") == (
      "http://gpu1:30000,http://gpu2:30000,http://gpu3:30000")
  assert driver[-1] == "--config.seed_offset=5"
  config = get_config(value(driver, "--config").split(":", 1)[1])
  assert config.backend == "ray" and config.llm.backend == "sglang"


def test_tpu_pod_recipe_needs_endpoints_and_joins_every_worker():
  out = subprocess.run(["bash", str(LAUNCH / "tpu_pod_ray_eval.sh"), "tpu", "z", "/ck", "/runs/x"],
                       capture_output=True, text=True, timeout=30, check=False,
                       env={"PATH": os.environ["PATH"], "DRY_RUN": "1"})
  assert out.returncode != 0 and "ENDPOINTS" in out.stderr
  cmds = dry_run("tpu_pod_ray_eval.sh", ["tpu", "z", "/ck", "/runs/x"],
                 {"ENDPOINTS": "http://a:30000,http://b:30000"})
  remote = [c[c.index("--command") + 1] for c in cmds]
  workers = [value(c, "--worker") for c in cmds]
  assert workers == ["0", "all", "0", "all"]
  assert "ray start --head" in remote[0] and "ray start --address=" in remote[1]
  assert "--config.llm.sglang.endpoints=http://a:30000,http://b:30000" in remote[2]
  assert "ray stop" in remote[3]
