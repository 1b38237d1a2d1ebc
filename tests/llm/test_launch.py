"""launch/sglang_server.sh builds the SGLang command it documents (checked with --dry-run)."""

from __future__ import annotations

import pathlib
import shlex
import subprocess

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "launch" / "sglang_server.sh"


def launch(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=30,
                        check=False)


def flag_values(argv: list[str], flag: str) -> list[str]:
  i = argv.index(flag) + 1
  values = []
  while i < len(argv) and not argv[i].startswith("--"):
    values.append(argv[i])
    i += 1
  return values


def test_dry_run_builds_the_sglang_command():
  out = launch("--model-path", "/ckpt/Qwen2.5-32B-Instruct", "--tp", "4", "--dp", "2",
               "--lora", "specialist=/runs/a", "--lora", "other=/runs/b",
               "--mem-fraction-static", "0.9", "--port", "31000", "--dry-run",
               "--", "--random-seed", "7")
  assert out.returncode == 0, out.stderr
  argv = shlex.split(out.stdout)
  assert argv[1:3] == ["-m", "sglang.launch_server"]
  assert flag_values(argv, "--model-path") == ["/ckpt/Qwen2.5-32B-Instruct"]
  assert flag_values(argv, "--tp-size") == ["4"] and flag_values(argv, "--dp-size") == ["2"]
  assert flag_values(argv, "--schedule-policy") == ["lpm"]
  assert flag_values(argv, "--mem-fraction-static") == ["0.9"]
  assert "--enable-lora" in argv
  assert flag_values(argv, "--lora-paths") == ["specialist=/runs/a", "other=/runs/b"]
  assert flag_values(argv, "--port") == ["31000"]
  assert argv[-2:] == ["--random-seed", "7"]


def test_lora_enabled_for_run_time_loading():
  out = launch("--model-path", "m", "--enable-lora", "--max-lora-rank", "64",
               "--lora-target-modules", "q_proj v_proj", "--dry-run")
  assert out.returncode == 0, out.stderr
  argv = shlex.split(out.stdout)
  assert "--enable-lora" in argv and "--lora-paths" not in argv
  assert flag_values(argv, "--max-lora-rank") == ["64"]
  assert flag_values(argv, "--lora-target-modules") == ["q_proj", "v_proj"]


def test_no_lora_flags_without_adapters():
  out = launch("--model-path", "m", "--dry-run")
  assert out.returncode == 0
  assert "--enable-lora" not in out.stdout and "--lora-paths" not in out.stdout


@pytest.mark.parametrize("args, message", [
    ((), "--model-path is required"),
    (("--model-path", "m", "--lora", "no-equals"), "NAME=PATH"),
    (("--model-path", "m", "--tp", "zero"), "positive integer"),
    (("--model-path", "m", "--mem-fraction-static", "1.5"), "in (0, 1)"),
    (("--model-path", "m", "--schedule-policy", "fastest"), "unknown --schedule-policy"),
    (("--model-path", "m", "--bogus"), "unknown option --bogus"),
    (("--model-path", "m", "--enable-lora"), "needs --max-lora-rank and --lora-target-modules"),
])
def test_bad_arguments_fail_with_a_message(args, message):
  out = launch(*args, "--dry-run")
  assert out.returncode == 2 and message in out.stderr


def test_missing_sglang_is_reported(tmp_path):
  out = subprocess.run(["bash", str(SCRIPT), "--model-path", str(tmp_path)], capture_output=True,
                       text=True, timeout=30, check=False,
                       env={"PATH": "/usr/bin:/bin", "SGLANG_PYTHON": "/bin/false"})
  assert out.returncode == 3 and "cannot import sglang" in out.stderr
