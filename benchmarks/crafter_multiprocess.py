"""CrafterEnv over a multi-process JAX job (the TPU-pod path) on one CPU machine.

Starts `--processes` JAX processes on 127.0.0.1 (`jax.distributed`, gloo
collectives), each with `--devices` CPU devices and `--batch` slots of one
global batch sharded over every process's devices, plus one single-process
peer with all `processes x batch` slots on `--devices` devices. Every process
steps the same random actions for its own slots and renders text only for
them; the script checks that each process's observations, rewards and done
flags equal the peer's rows for its slots and prints the steps/s of both.

    python benchmarks/crafter_multiprocess.py                 # 2 processes x 4 devices, B=4 each
    python benchmarks/crafter_multiprocess.py --processes=2 --devices=2 --batch=64 --steps=50
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time

from absl import app, flags

_PROCESSES = flags.DEFINE_integer("processes", 2, "JAX processes of the multi-process job.")
_DEVICES = flags.DEFINE_integer("devices", 4, "CPU devices per process.")
_BATCH = flags.DEFINE_integer("batch", 4, "Slots per process.")
_STEPS = flags.DEFINE_integer("steps", 8, "Steps (after one untimed step that compiles).")
_ROLE = flags.DEFINE_string("role", "", "Internal: 'PID,N,PORT,OUT' of a child process.")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child(pid: int, n: int, port: int, out: str) -> None:
  """One process: plays its slots, writes its results and timing to `out`."""
  import jax

  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if n > 1:
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=n,
                               process_id=pid)
  import numpy as np

  from automem.envs import crafter_text as ct
  from automem.envs.crafter import CrafterEnv

  total = _PROCESSES.value * _BATCH.value
  mine = slice(pid * _BATCH.value, (pid + 1) * _BATCH.value) if n > 1 else slice(0, total)
  env = CrafterEnv(mine.stop - mine.start, max_steps=10_000)
  seeds = list(range(1000, 1000 + total))[mine]
  rows = [[o.text for o in env.reset(seeds)]]
  rng = np.random.default_rng(0)
  names = np.array(ct.ACTION_NAMES, dtype=object)
  actions = [[str(a) for a in rng.choice(names, total)][mine] for _ in range(_STEPS.value + 1)]
  env.step(actions[0])
  t0 = time.perf_counter()
  for a in actions[1:]:
    rows.append([(r.observation.text, r.reward, r.done) for r in env.step(a)])
  seconds = time.perf_counter() - t0
  with open(out, "w") as f:
    json.dump({"rows": rows, "seconds": seconds, "devices": env.num_devices,
               "slots": env.num_envs}, f)


def spawn(pid: int, n: int, port: int, out: str) -> subprocess.Popen:
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO,
             XLA_FLAGS=f"--xla_force_host_platform_device_count={_DEVICES.value}")
  argv = [sys.executable, os.path.abspath(__file__), f"--role={pid},{n},{port},{out}",
          f"--processes={_PROCESSES.value}", f"--devices={_DEVICES.value}",
          f"--batch={_BATCH.value}", f"--steps={_STEPS.value}"]
  return subprocess.Popen(argv, env=env)


def main(argv: list[str]) -> None:
  del argv
  if _ROLE.value:
    pid, n, port, out = _ROLE.value.split(",")
    child(int(pid), int(n), int(port), out)
    return
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  tmp = tempfile.mkdtemp(prefix="crafter_mp")
  n = _PROCESSES.value
  peer_out = os.path.join(tmp, "peer.json")
  outs = [os.path.join(tmp, f"p{i}.json") for i in range(n)]
  if spawn(0, 1, port, peer_out).wait(timeout=1200) != 0:
    raise SystemExit("the single-process peer failed")
  procs = [spawn(i, n, port, outs[i]) for i in range(n)]
  if any(p.wait(timeout=1200) != 0 for p in procs):
    raise SystemExit("a process of the multi-process job failed")
  with open(peer_out) as f:
    peer = json.load(f)
  results = []
  for path in outs:
    with open(path) as f:
      results.append(json.load(f))
  b = _BATCH.value
  same = all([row[i * b:(i + 1) * b] for row in peer["rows"]] == res["rows"]
             for i, res in enumerate(results))
  total = n * b
  mp_s = max(r["seconds"] for r in results)
  print(f"\n{n} processes x {_DEVICES.value} CPU devices ({results[0]['devices']} in the global "
        f"mesh), {b} slots each; peer: 1 process, {peer['devices']} devices, {total} slots")
  print(f"observations, rewards and done flags identical to the peer: {same}")
  print(f"steps/s: multi-process {total * _STEPS.value / mp_s:.0f}, "
        f"single process {total * _STEPS.value / peer['seconds']:.0f}")
  if not same:
    raise SystemExit(1)


if __name__ == "__main__":
  app.run(main)
