"""Worker-pool throughput: text-observation steps/s, pool vs in-process, in one run.

    python benchmarks/bench_pool.py                       # NetHack, 8 slots, 1 and 2 workers
    python benchmarks/bench_pool.py --game=minihack --task=Corridor-R3 --steps=300
    python benchmarks/bench_pool.py --game=crafter_original --num_envs=4 --steps=100

Rows (same seeds, same random valid actions, same text observations):
  single env      one slot env stepped directly in this process (the peer)
  in-process xN   N slots stepped one after another in this process (SerialEnv)
  pool K workers  N slots spread over K worker processes (EnvPool)

"steps/s" counts slot steps (one action in one game); "vs single" divides by
the single env's; "CPU ms/step" is the CPU time of this process and the
workers per slot step (load-independent, unlike wall time). Below the table:
the pool's overhead per slot step against the in-process batch (pickling,
sockets, process switches), in wall and CPU time, and the round-trip latency
of one batched call that does no game work (invalid action names: each slot
answers with its last observation).
Expect "pool 2 workers" to approach 2x "pool 1 worker" only with >= 3 idle
cores (two workers and the parent); the uptime load average is printed.
"""

from __future__ import annotations

import os
import random
import sys
import time

import psutil
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script

from automem.envs.crafter_original import crafter_original_slot_factory
from automem.envs.minihack import minihack_slot_factory
from automem.envs.nethack import nethack_slot_factory
from automem.envs.pool import EnvPool
from automem.envs.slots import SerialEnv

_GAME = flags.DEFINE_enum("game", "nethack", ["nethack", "minihack", "crafter_original"], "Which game.")
_TASK = flags.DEFINE_string("task", None, "Task id (default: NetHackChallenge-v0 / MiniHack-Corridor-R3-v0).")
_NUM_ENVS = flags.DEFINE_integer("num_envs", 8, "Slots in the batched rows.")
_STEPS = flags.DEFINE_integer("steps", 200, "Batched steps per row (after a warm-up).")
_WORKERS = flags.DEFINE_list("workers", ["1", "2"], "Worker counts to measure.")
_NLE_MOVES = ("north", "east", "south", "west", "northeast", "southeast", "southwest", "northwest", "far east", "search")
_CRAFTER_MOVES = ("Move West", "Move East", "Move North", "Move South", "Do", "Noop")


def _factory():
  if _GAME.value == "crafter_original":
    return crafter_original_slot_factory(max_steps=10**9)
  kwargs = {"max_steps": 10**9}
  if _GAME.value == "nethack":
    return nethack_slot_factory(_TASK.value or "NetHackChallenge-v0", no_progress_steps=None, **kwargs)
  return minihack_slot_factory(_TASK.value or "Corridor-R3", **kwargs)


def _plan(n: int, steps: int) -> list[list[str]]:
  rng = random.Random(0)
  moves = _CRAFTER_MOVES if _GAME.value == "crafter_original" else _NLE_MOVES
  return [[rng.choice(moves) for _ in range(n)] for _ in range(steps)]


def _cpu_s(env) -> float:
  """CPU seconds used so far by this process and the env's worker processes."""
  total = time.process_time()
  for pid in getattr(env, "worker_pids", ()):
    t = psutil.Process(pid).cpu_times()
    total += t.user + t.system
  return total


def _run_batched(env, plan) -> tuple[float, float]:
  """(wall, CPU) seconds spent in `step`; resets of finished slots are not timed."""
  n = env.num_envs
  env.reset(list(range(n)))
  for actions in plan[:10]:  # warm-up
    env.step(actions)
  env.reset(list(range(n)))
  wall = reset_cpu = 0.0
  cpu0 = _cpu_s(env)  # read once around the loop: CPU clocks tick in 10 ms steps
  for actions in plan:
    t = time.perf_counter()
    results = env.step(actions)
    wall += time.perf_counter() - t
    done = [i for i, r in enumerate(results) if r.done]
    if done:
      c = _cpu_s(env)
      env.reset([1000 + i for i in done], indices=done)
      reset_cpu += _cpu_s(env) - c
  return wall, _cpu_s(env) - cpu0 - reset_cpu


def _run_single(factory, plan) -> float:
  env = factory()
  env.reset(0)
  total = 0.0
  for actions in plan:
    t = time.perf_counter()
    done = env.step(actions[0]).done
    total += time.perf_counter() - t
    if done:
      env.reset(1)
  env.close()
  return total


def _round_trip_ms(pool: EnvPool, calls: int = 50) -> float:
  pool.reset(list(range(pool.num_envs)))
  bogus = ["not an action"] * pool.num_envs
  pool.step(bogus)
  t = time.perf_counter()
  for _ in range(calls):
    pool.step(bogus)
  return 1e3 * (time.perf_counter() - t) / calls


def main(argv):
  del argv
  factory = _factory()
  n, steps = _NUM_ENVS.value, _STEPS.value
  plan = _plan(n, steps)
  rows = []
  single_s = _run_single(factory, _plan(1, steps * 4))
  rows.append(("single env", 1, steps * 4 / single_s, 1e3 * single_s / (steps * 4), None))
  serial = SerialEnv(factory, n)
  try:
    serial_s, serial_cpu = _run_batched(serial, plan)
  finally:
    serial.close()
  rows.append((f"in-process x{n}", n, n * steps / serial_s, 1e3 * serial_s / steps, 1e3 * serial_cpu / (n * steps)))
  overhead, latency = {}, {}
  for k in (int(w) for w in _WORKERS.value):
    t0 = time.perf_counter()
    pool = EnvPool(factory, n, k)
    start_s = time.perf_counter() - t0
    try:
      pool_s, pool_cpu = _run_batched(pool, plan)
      latency[k] = _round_trip_ms(pool)
    finally:
      pool.close()
    overhead[k] = (1e3 * (pool_s - serial_s) / (n * steps), 1e3 * (pool_cpu - serial_cpu) / (n * steps))
    rows.append((f"pool {k} worker{'s' if k > 1 else ''} (start {start_s:.1f}s)", n, n * steps / pool_s,
                 1e3 * pool_s / steps, 1e3 * pool_cpu / (n * steps)))
  base = rows[0][2]
  task = {"nethack": lambda: factory.args[1], "minihack": lambda: factory.args[0]}.get(_GAME.value, lambda: "crafter 1.8")()
  print(f"\n{_GAME.value} ({task}), text observations, {steps} batched steps of {n} slots; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
  print(f"{'row':32s} {'slots':>5s} {'steps/s':>9s} {'vs single':>9s} {'ms/call':>8s} {'CPU ms/step':>11s}")
  for name, slots, sps, ms, cpu in rows:
    cpu_s = "" if cpu is None else f"{cpu:.3f}"
    print(f"{name:32s} {slots:5d} {sps:9.0f} {sps / base:8.2f}x {ms:8.2f} {cpu_s:>11s}")
  for k, (wall_ms, cpu_ms) in overhead.items():
    print(f"pool overhead per slot step, {k} worker(s) vs in-process: {wall_ms:+.3f} ms wall, {cpu_ms:+.3f} ms CPU")
  for k, ms in latency.items():
    print(f"round trip of a batched call with no game work, {k} worker(s): {ms:.2f} ms")


if __name__ == "__main__":
  app.run(main)
