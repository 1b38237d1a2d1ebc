"""Text-observation throughput of the batched Craftax Crafter env vs the original `crafter`.

For each batch size B the Craftax env (`automem.envs.crafter.CrafterEnv`) takes
random valid actions in every slot, resets finished slots, and renders a text
observation per slot per step. The peer, measured in the same run, is the
original `crafter` package stepping one env and rendering the same text
description (our renderer on its state, via `crafter_state_view`) each step.
The two alternate in short rounds, so a shared machine's load hits both alike.

    python benchmarks/bench_crafter.py                      # B in 1,16,64,256
    python benchmarks/bench_crafter.py --batch_sizes=64 --rounds=3
    XLA_FLAGS=--xla_force_host_platform_device_count=8 \
      python benchmarks/bench_crafter.py --batch_sizes=256 --devices=1,8   # 8 CPU "devices"
    python benchmarks/bench_crafter.py --batch_sizes=4096 --devices=1,all  # every GPU/TPU

Prints a markdown table: steps/s, the time of the first reset and first step
(compilation, reported apart), and per batched step the device time (jitted
step + fetch), text rendering and other host bookkeeping, the render / device
ratio, and the speed-up over the peer. `--dynamics=local,craftax` adds rows
for Craftax's stock step. `--devices` measures the batch sharded over that
many local devices ("all" = every one; the devices column, and the ratio to
the one-device row of the same run). Targets (issue 2): at B=64 >= 50x
the peer's steps/s, and rendering no dearer than the Craftax step.
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
from absl import app, flags

from automem.envs import crafter_text as ct

_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "16", "64", "256"], "Craftax batch sizes.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Alternating peer / ours rounds per batch size.")
_STEPS = flags.DEFINE_integer("steps", 40, "Timed batched steps of ours per round.")
_PEER_STEPS = flags.DEFINE_integer("peer_steps", 100, "Timed steps of the original crafter per round.")
_WARMUP = flags.DEFINE_integer("warmup", 5, "Untimed batched steps after compiling.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of worlds and random actions.")
_DEVICES = flags.DEFINE_list(
    "devices", ["1"], "Local devices the batch is sharded over, per row (all = every one).")
_OUT = flags.DEFINE_string("out", None, "Optional JSON file for the results.")
_DYNAMICS = flags.DEFINE_list(
    "dynamics", ["local"], "CrafterEnv dynamics to measure: local (default), craftax (stock step)."
)


def crafter_state_view(env) -> ct.CrafterView:
  """The one-slot `CrafterView` of an original `crafter.Env` (reads its world)."""
  world, player = env._world, env._player
  names = {i: n for n, i in world._mat_ids.items()}
  lut = np.zeros(256, np.int64)
  for i, n in names.items():
    lut[i] = ct.CELL_IDS.get(n, 0) if n is not None else 0
  lut[255] = ct.CELL_IDS["map edge"]
  x, y = (int(v) for v in player.pos)
  px, py = ct.VIEW_WIDTH // 2, ct.VIEW_HEIGHT // 2
  mats = np.pad(world._mat_map, px, constant_values=255)
  objs = np.pad(world._obj_map, px)
  window = (slice(x, x + 2 * px + 1), slice(y + px - py, y + px + py + 1))  # crafter maps are [x, y]
  cells = lut[mats[window]].T.copy()  # [rows = y, cols = x]
  for r, c in zip(*np.nonzero(objs[window].T)):
    obj = world._objects[objs[window].T[r, c]]
    name = type(obj).__name__.lower()
    if name == "plant" and obj.ripe:
      name = "ripe plant"
    cells[r, c] = ct.CELL_IDS.get(name, 0)
  inv = player.inventory
  return ct.CrafterView(
      cells=cells[None],
      facing=np.array([[player.facing[1], player.facing[0]]]),
      vitals=np.array([[inv[v] for v in ct.VITALS]]),
      inventory=np.array([[inv[k] for k in ct.INVENTORY_ITEMS]]),
      sleeping=np.array([player.sleeping]),
      dead=np.array([player.health <= 0]),
      daylight=np.array([world.daylight]),
  )


class Peer:
  """The original crafter package: one env, a text description per step."""

  def __init__(self, seed: int) -> None:
    import crafter

    self.env = crafter.Env(seed=seed, length=2000)
    self.env.reset()
    self.rng = np.random.default_rng(seed)

  def run(self, steps: int) -> float:
    """Seconds for `steps` steps (resets included)."""
    actions = self.rng.integers(0, len(ct.ACTION_NAMES), steps)
    t0 = time.perf_counter()
    for a in actions:
      _, _, done, _ = self.env.step(int(a))
      ct.render_text(crafter_state_view(self.env))
      if done:
        self.env.reset()
    return time.perf_counter() - t0


def bench(batch: int, rounds: int, steps: int, peer_steps: int, warmup: int, seed: int,
          dynamics: str, peer: Peer, devices: int | None = 1) -> dict:
  """Ours at batch size `batch`, alternating rounds with the peer (fair under shared load)."""
  from automem.envs.crafter import CrafterEnv

  env = CrafterEnv(batch, dynamics=dynamics, devices=devices)
  rng = np.random.default_rng(seed)
  names = np.array(ct.ACTION_NAMES, dtype=object)
  t0 = time.perf_counter()
  env.reset(list(range(seed, seed + batch)))
  t1 = time.perf_counter()
  env.step(list(names[rng.integers(0, len(names), batch)]))
  t2 = time.perf_counter()
  next_seed = seed + batch

  def run(n: int) -> float:
    nonlocal next_seed
    start = time.perf_counter()
    for _ in range(n):
      results = env.step(list(names[rng.integers(0, len(names), batch)]))
      done = [i for i, r in enumerate(results) if r.done]
      if done:
        env.reset(list(range(next_seed, next_seed + len(done))), done)
        next_seed += len(done)
    return time.perf_counter() - start

  run(warmup)
  env.timings.update(device_s=0.0, render_s=0.0, host_s=0.0)
  ours_s = peer_s = 0.0
  for _ in range(rounds):
    peer_s += peer.run(peer_steps)
    ours_s += run(steps)
  n = rounds * steps
  return {
      "backend": f"craftax, {dynamics} spawn (ours)",
      "B": batch,
      "devices": env.num_devices,
      "steps_per_s": batch * n / ours_s,
      "peer_steps_per_s": rounds * peer_steps / peer_s,
      "compile_reset_s": t1 - t0,
      "compile_step_s": t2 - t1,
      "device_ms": 1e3 * env.timings["device_s"] / n,
      "render_ms": 1e3 * env.timings["render_s"] / n,
      "host_ms": 1e3 * env.timings["host_s"] / n,
      "wall_ms": 1e3 * ours_s / n,
  }


def main(argv: list[str]) -> None:
  del argv
  import jax

  peer = Peer(_SEED.value)
  peer.run(20)  # warm caches (textures)
  load = os.getloadavg()[0]
  rows = [
      bench(int(b), _ROUNDS.value, _STEPS.value, _PEER_STEPS.value, _WARMUP.value, _SEED.value, d,
            peer, None if n == "all" else int(n))
      for d in _DYNAMICS.value
      for b in _BATCH_SIZES.value
      for n in _DEVICES.value
  ]
  print(f"\njax {jax.__version__} on {jax.local_device_count()} x {jax.devices()[0].device_kind}, "
        f"{os.cpu_count()} CPUs, "
        f"load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end\n")
  print(
      "| backend | B | devices | steps/s | x 1 device | peer steps/s (same rounds) | x peer "
      "| first reset + first step s | device step ms | render ms | other host ms "
      "| render / device step |"
  )
  print("|---|---|---|---|---|---|---|---|---|---|---|---|")
  one = {(r["backend"], r["B"]): r["steps_per_s"] for r in rows if r["devices"] == 1}
  for r in rows:
    ratio = r["steps_per_s"] / r["peer_steps_per_s"]
    base = one.get((r["backend"], r["B"]))
    vs_one = f"{r['steps_per_s'] / base:.2f}" if base else "-"
    print(
        f"| {r['backend']} | {r['B']} | {r['devices']} | {r['steps_per_s']:.0f} | {vs_one} | "
        f"{r['peer_steps_per_s']:.0f} | "
        f"{ratio:.1f} | {r['compile_reset_s']:.1f} + {r['compile_step_s']:.1f} | "
        f"{r['device_ms']:.2f} | {r['render_ms']:.2f} | {r['host_ms']:.2f} | "
        f"{r['render_ms'] / r['device_ms']:.2f} |"
    )
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(rows, f, indent=2)


if __name__ == "__main__":
  app.run(main)
