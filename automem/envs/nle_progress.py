"""NetHack progression: BALROG's data-informed milestone table.

The table (`automem/data/nethack_progression.json`, source in
`automem/data/SOURCES.md`) maps milestones such as "Dlvl:3" or "Xp:5" to the
share of human games that reached them and went on to win. Like BALROG, an
episode's progression is the largest value over the deepest dungeon level and
the highest experience level it reached, times 100.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable, Sequence

_TABLE_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "nethack_progression.json")

# Indices into NLE's blstats vector (nle.nethack.NLE_BL_DEPTH / NLE_BL_XP); fixed by
# NLE's observation layout, repeated here so this module does not import nle.
BL_DEPTH = 12
BL_XP = 18


@functools.cache
def progression_table() -> dict[str, float]:
  """The milestone -> win-share table, loaded once."""
  with open(_TABLE_PATH) as f:
    table = json.load(f)
  return {str(k): float(v) for k, v in table.items()}


def milestones_from_blstats(blstats: Sequence[int]) -> tuple[str, str]:
  """The ("Dlvl:N", "Xp:N") milestones a blstats vector shows."""
  return f"Dlvl:{int(blstats[BL_DEPTH])}", f"Xp:{int(blstats[BL_XP])}"


def progression(milestones: Iterable[str]) -> float:
  """BALROG progression in [0, 100] of a set of reached milestones.

  Milestones not in the table (e.g. "Dlvl:60") contribute nothing, as in BALROG.
  """
  table = progression_table()
  return 100.0 * max((table[m] for m in milestones if m in table), default=0.0)


class ProgressTracker:
  """Accumulates the milestones of one episode from successive blstats."""

  def __init__(self) -> None:
    self.reached: list[str] = []

  def update(self, blstats: Sequence[int]) -> None:
    for m in milestones_from_blstats(blstats):
      if m not in self.reached:
        self.reached.append(m)

  @property
  def progression(self) -> float:
    return progression(self.reached)
