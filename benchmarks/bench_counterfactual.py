"""Counterfactual forks on Craftax: all forks in one batched env vs one fork at a time.

A fork rebuilds an episode's env state from its seed and action prefix, restores
the memory files, and plays K more steps with a fresh LOG/PLAN agent (the full
`automem.credit.counterfactual` path: replay, agent, memory store, env). The
policy is an instant scripted client (it answers DONE to LOG and one seeded
ACTION to PLAN), so the figure is the cost of the env and agent side, which
is what batching changes; a real model adds the same LLM time to both arms.

Both arms play the same forks (random recorded prefixes of up to --max_prefix
steps from --episodes Crafter episodes); "batched" runs them all with
`run_forks(batch=N)` (one vmapped, jitted Craftax step per env step for every
fork), "one at a time" runs `run_forks` on each fork alone (its own one-slot
env). The arms alternate in rounds so a shared machine's load hits both alike.

    python benchmarks/bench_counterfactual.py                  # 64 forks
    python benchmarks/bench_counterfactual.py --forks=16,64 --horizon=8

Prints forks/s of both arms and the speed-up (target: >= 20x at 64 forks).
"""

from __future__ import annotations

import json
import os
import sys
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
from absl import app, flags

from automem.agent import AgentConfig
from automem.credit.counterfactual import Fork, run_forks
from automem.credit.scored import ScoredTurn
from automem.envs import make_env
from automem.envs.crafter_text import ACTION_NAMES
from automem.llm import LLMResult
from automem.memory import load_structure

_FORKS = flags.DEFINE_list("forks", ["64"], "Numbers of forks to measure.")
_HORIZON = flags.DEFINE_integer("horizon", 4, "K: steps played after each fork.")
_MAX_PREFIX = flags.DEFINE_integer("max_prefix", 100, "Longest recorded action prefix.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Alternating rounds per fork count.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the prefixes and the policy.")
_OUT = flags.DEFINE_string("out", None, "Optional JSON file for the results.")


class InstantPolicy:
  """The LLM client interface with no model: LOG ends at once, PLAN acts by a seeded hash."""

  async def generate(self, requests):
    out = []
    for r in requests:
      phase = r.request_id.rsplit("/", 2)[1]
      if phase == "log":
        text = "<|DONE|>"
      else:
        name = ACTION_NAMES[zlib.crc32(f"{r.request_id}/{r.seed}".encode()) % len(ACTION_NAMES)]
        text = f"<|ACTION|>{name}<|END|>"
      out.append(LLMResult(text=text, finish_reason="stop", prompt_tokens=1,
                           completion_tokens=1))
    return out


def make_forks(n: int, max_prefix: int, seed: int, structure) -> list[Fork]:
  rng = np.random.default_rng(seed)
  memory = {f.name: f.content for f in structure.files}
  forks = []
  for i in range(n):
    length = int(rng.integers(0, max_prefix + 1))
    prefix = tuple(ACTION_NAMES[int(a)] for a in rng.integers(0, len(ACTION_NAMES), length))
    decision = ScoredTurn("bench", f"bench-{i}", "crafter", "crafter", length, "log", 0, ())
    forks.append(Fork(decision, "with", 0, seed, memory, "crafter", "crafter", 1000 + i,
                      {"max_steps": 10_000}, prefix))
  return forks


def measure(forks, structure, horizon, batch: int) -> float:
  policy, cfg = InstantPolicy(), AgentConfig(seed=0)
  t0 = time.perf_counter()
  if batch > 1:
    out = run_forks(forks, client=policy, structures={"crafter": structure},
                    agent_config=cfg, horizon=horizon, batch=batch)
  else:
    out = []
    for f in forks:
      out += run_forks([f], client=policy, structures={"crafter": structure},
                       agent_config=cfg, horizon=horizon, batch=1)
  dt = time.perf_counter() - t0
  assert len(out) == len(forks) and all(o.error is None for o in out)
  return dt


def main(argv):
  del argv
  structure = load_structure("crafter")
  rows = []
  for n in (int(x) for x in _FORKS.value):
    forks = make_forks(n, _MAX_PREFIX.value, _SEED.value, structure)
    for slots in (n, 1):  # compile both batch shapes before timing
      with make_env("crafter", slots, max_steps=10_000) as env:
        env.reset([0] * slots)
        env.step(["Noop"] * slots)
    measure(forks[:2], structure, _HORIZON.value, 2)
    batched, single = [], []
    for _ in range(_ROUNDS.value):
      batched.append(measure(forks, structure, _HORIZON.value, n))
      single.append(measure(forks, structure, _HORIZON.value, 1))
    b, s = min(batched), min(single)
    rows.append({"forks": n, "horizon": _HORIZON.value, "max_prefix": _MAX_PREFIX.value,
                 "batched_forks_per_s": n / b, "one_at_a_time_forks_per_s": n / s,
                 "speedup": s / b})
  print("| forks | K | max prefix | batched forks/s | one at a time forks/s | speed-up |")
  print("|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['forks']} | {r['horizon']} | {r['max_prefix']} | "
          f"{r['batched_forks_per_s']:.1f} | {r['one_at_a_time_forks_per_s']:.2f} | "
          f"{r['speedup']:.1f}x |")
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(rows, f, indent=2)


if __name__ == "__main__":
  app.run(main)
