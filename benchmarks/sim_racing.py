"""Simulated selection rules: false-accept rate, power and episode cost per round.

    python benchmarks/sim_racing.py                         # 2000 races per row, ~1 CPU-minute
    python benchmarks/sim_racing.py --races=1000 --noise_sd=18 --effect=3

Rows, each over `--races` simulated rounds of one candidate against the
incumbent (score = base + shared seed effect + true effect + per-episode
noise with SD `--noise_sd`, Crafter's per-episode spread is 10-20 points):
  racing (ours)    paired stages with early drop, one-sided bootstrap lower
                   bound > 0 at the configured level, then a fresh-seed
                   confirmation block (automem.rollout.racing, default budget)
  greedy (authors) one 10-episode mean on fixed seeds against a stored
                   incumbent score that is never re-measured
Columns: accept rate with no true effect (false accepts), accept rate with a
true `--effect` point gain (power), mean episodes played per round.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script

from automem.rollout.racing import (
    INCUMBENT,
    RaceConfig,
    SimulatedArms,
    simulate,
    simulate_greedy,
)

_RACES = flags.DEFINE_integer("races", 2000, "Simulated rounds per row.")
_NOISE = flags.DEFINE_float("noise_sd", 13.0, "Per-episode noise SD (progression points).")
_SEED_SD = flags.DEFINE_float("seed_sd", 5.0, "SD of the per-seed effect shared by both arms.")
_EFFECT = flags.DEFINE_float("effect", 5.0, "True gain of the better candidate (points).")
_GREEDY_EPISODES = flags.DEFINE_integer("greedy_episodes", 10, "Episodes of the greedy rule.")


def main(argv: list[str]) -> None:
  del argv
  config = RaceConfig()

  def arms(eff: float) -> SimulatedArms:
    return SimulatedArms({INCUMBENT: 0.0, "cand": eff}, noise_sd=_NOISE.value,
                         seed_sd=_SEED_SD.value)

  n = _RACES.value
  rows = [
      ("racing (ours)", simulate(config, arms(0.0), races=n, seed=1),
       simulate(config, arms(_EFFECT.value), races=n, seed=2)),
      ("greedy (authors)",
       simulate_greedy(arms(0.0), episodes=_GREEDY_EPISODES.value, races=n, seed=3),
       simulate_greedy(arms(_EFFECT.value), episodes=_GREEDY_EPISODES.value, races=n, seed=4)),
  ]
  print(f"{n} races per cell; noise SD {_NOISE.value:g}, seed SD {_SEED_SD.value:g}; racing: "
        f"stages {config.stages}, confirm {config.confirm_seeds}, level {config.level:g}")
  print(f"{'rule':<18} {'false accept':>12} {f'power (+{_EFFECT.value:g})':>12} "
        f"{'episodes/round (null, effect)':>30}")
  for name, null, real in rows:
    cost = f"{null['episodes_per_round']:.0f}, {real['episodes_per_round']:.0f}"
    print(f"{name:<18} {null['accept_cand']:>12.3f} {real['accept_cand']:>12.3f} {cost:>30}")


if __name__ == "__main__":
  app.run(main)
