"""Crafter's 22 achievements, BALROG progression and the Crafter score.

Shared by the Craftax env (`crafter.py`) and the original-`crafter` env, so
both report the same names and numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

# The original crafter package's achievement names, in its (alphabetical) order.
ACHIEVEMENTS: tuple[str, ...] = (
    "collect_coal",
    "collect_diamond",
    "collect_drink",
    "collect_iron",
    "collect_sapling",
    "collect_stone",
    "collect_wood",
    "defeat_skeleton",
    "defeat_zombie",
    "eat_cow",
    "eat_plant",
    "make_iron_pickaxe",
    "make_iron_sword",
    "make_stone_pickaxe",
    "make_stone_sword",
    "make_wood_pickaxe",
    "make_wood_sword",
    "place_furnace",
    "place_plant",
    "place_stone",
    "place_table",
    "wake_up",
)


def progression(achievements: Iterable[str]) -> float:
  """BALROG progression: unlocked achievements / 22 x 100, in [0, 100]."""
  unlocked = set(achievements)
  unknown = unlocked - set(ACHIEVEMENTS)
  if unknown:
    raise ValueError(f"unknown Crafter achievements: {sorted(unknown)}")
  return 100.0 * len(unlocked) / len(ACHIEVEMENTS)


def success_rates(episodes: Sequence[Iterable[str]]) -> dict[str, float]:
  """Per-achievement success rate in percent over episodes (each a set of names)."""
  if not episodes:
    raise ValueError("success_rates needs at least one episode")
  sets = [set(e) for e in episodes]
  return {a: 100.0 * sum(a in s for s in sets) / len(sets) for a in ACHIEVEMENTS}


def crafter_score(rates: Mapping[str, float] | Sequence[float]) -> float:
  """The Crafter score (Hafner 2021): exp(mean(ln(1 + s_i))) - 1, s_i in percent.

  Args:
    rates: the 22 success rates in percent, as a mapping from achievement
      name (all 22 required) or as a sequence of 22 numbers.

  Returns:
    The score in percent, in [0, 100].
  """
  if isinstance(rates, Mapping):
    missing = set(ACHIEVEMENTS) - set(rates)
    if missing:
      raise ValueError(f"crafter_score needs all 22 achievements; missing {sorted(missing)}")
    values = [float(rates[a]) for a in ACHIEVEMENTS]
  else:
    values = [float(r) for r in rates]
    if len(values) != len(ACHIEVEMENTS):
      raise ValueError(f"crafter_score needs 22 success rates, got {len(values)}")
  if any(not 0.0 <= v <= 100.0 for v in values):
    raise ValueError("success rates must be percentages in [0, 100]")
  return math.exp(sum(math.log(1.0 + v) for v in values) / len(values)) - 1.0
