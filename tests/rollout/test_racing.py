"""Paired racing: statistics, early drop, confirmation, and the simulated error rates."""

from __future__ import annotations

import numpy as np
import pytest

from automem.rollout.racing import (
    INCUMBENT,
    Block,
    RaceConfig,
    SimulatedArms,
    blocks,
    bootstrap_bound,
    paired_gains,
    race,
    sign_test_p,
    simulate,
    simulate_greedy,
)


def test_statistics():
  gains = paired_gains({"a": 3.0, "b": 5.0, "c": 1.0}, {"a": 1.0, "b": 1.0, "d": 9.0})
  assert gains.tolist() == [2.0, 4.0]  # only units both played, sorted
  g = np.array([4.0, 6.0, 5.0, 7.0, 3.0, 5.0])
  lb, ub = bootstrap_bound(g, 0.05), bootstrap_bound(g, 0.05, upper=True)
  assert 3.0 < lb < 5.0 < ub < 7.0
  assert bootstrap_bound(np.array([]), 0.1) == -np.inf
  # Sign test on discordant pairs: 6 wins, 0 losses, ties ignored -> p = 1/64.
  assert sign_test_p(np.array([1, 1, 1, 1, 1, 1, 0, 0])) == pytest.approx(1 / 64)
  assert sign_test_p(np.array([1, 1, 1, 1, 1, 1]), worse=True) == 1.0
  assert sign_test_p(np.array([0, 0])) == 1.0


def test_config_and_blocks():
  c = RaceConfig(stages=(2, 3), confirm_seeds=4)
  assert [(b.name, b.kind, b.offset, b.size) for b in blocks(c)] == [
      ("stage1", "race", 0, 2), ("stage2", "race", 2, 3), ("confirm", "confirm", 5, 4)]
  assert c.seeds_per_round == 9
  for bad in (dict(stages=()), dict(level=0.0), dict(test="t"), dict(confirm_seeds=-1)):
    with pytest.raises(ValueError):
      RaceConfig(**bad)


def _fixed(table):
  """A play function from fixed per-arm scores; records what was asked."""
  asked = []

  def play(arms, block: Block):
    asked.append((tuple(arms), block.name))
    return {a: {str(u): table[a](u) for u in range(block.offset, block.offset + block.size)}
            for a in arms}

  return play, asked


def test_clearly_worse_dropped_early_and_better_confirmed():
  table = {INCUMBENT: lambda u: 10.0 + u % 3, "bad": lambda u: u % 3 - 20.0,
           "good": lambda u: 14.0 + u % 3 + (u % 2)}
  play, asked = _fixed(table)
  res = race(["bad", "good"], play, RaceConfig(stages=(5, 5), confirm_seeds=4))
  assert res.decision == "accepted" and res.accepted == "good"
  assert res.dropped["bad"]["stage"] == "stage1"
  assert asked == [((INCUMBENT, "bad", "good"), "stage1"), ((INCUMBENT, "good"), "stage2"),
                   ((INCUMBENT, "good"), "confirm")]
  assert res.test["passed"] and res.test["lower_bound"] > 0
  assert res.confirm["n"] == 4 and res.confirm["mean_gain"] > 0
  assert res.episodes == 15 + 10 + 8


def test_confirmation_can_reject():
  # Wins on the raced seeds (0..9), loses on the fresh confirmation seeds (10..13).
  table = {INCUMBENT: lambda u: 10.0, "lucky": lambda u: 15.0 if u < 10 else 5.0}
  play, _ = _fixed(table)
  res = race(["lucky"], play, RaceConfig(stages=(5, 5), confirm_seeds=4))
  assert res.decision == "rejected_confirm" and res.accepted is None
  assert res.test["passed"] and res.confirm["mean_gain"] == -5.0


def test_binary_outcomes_use_the_sign_test():
  table = {INCUMBENT: lambda u: 0.0, "cand": lambda u: 100.0 if u % 4 else 0.0}
  play, _ = _fixed(table)
  res = race(["cand"], play, RaceConfig(stages=(8, 8), confirm_seeds=4, test="sign"))
  assert res.test["test"] == "sign" and res.test["wins"] == 12 and res.test["losses"] == 0
  assert res.decision == "accepted"


def test_simulated_error_rates_beat_the_greedy_rule():
  """>= 1000 simulated races with Crafter-like noise (SD 13) at the default budget."""
  config = RaceConfig()
  null = simulate(config, SimulatedArms({INCUMBENT: 0.0, "cand": 0.0}), races=1000, seed=1)
  real = simulate(config, SimulatedArms({INCUMBENT: 0.0, "cand": 5.0}), races=1000, seed=2)
  assert null["accept_cand"] <= config.level
  assert real["accept_cand"] >= 0.80
  greedy_null = simulate_greedy(SimulatedArms({INCUMBENT: 0.0, "cand": 0.0}), races=1000, seed=3)
  assert greedy_null["accept_cand"] > 0.35  # the authors' rule keeps noise about half the time
  assert null["episodes_per_round"] < config.seeds_per_round * 2


def test_simulated_binary_races_hold_the_level():
  config = RaceConfig(stages=(40, 40), confirm_seeds=20, test="sign")
  null = simulate(config, SimulatedArms({INCUMBENT: 0.0, "cand": 0.0}, base=30.0, binary=True),
                  races=300, seed=4)
  real = simulate(config, SimulatedArms({INCUMBENT: 0.0, "cand": 25.0}, base=30.0,
                                        binary=True), races=300, seed=5)
  assert null["accept_cand"] <= config.level
  assert real["accept_cand"] >= 0.8
