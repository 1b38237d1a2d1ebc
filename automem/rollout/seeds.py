"""Named, disjoint seed sets: train, selection and test.

Every loop draws its episodes from a named set so that nothing is tuned on
the seeds a result is reported on:

- "train": episodes that Loop 2 mines for training decisions and that
  Loop 1's reviewer may read;
- "selection": episodes that decide whether a revision (structure or
  adapter) is kept;
- "test": held-out episodes for the numbers that get reported.

The sets are fixed, non-overlapping integer ranges, the same for every game
and task (a seed fully determines an episode of a given task):

| set       | seeds                     |
| --------- | ------------------------- |
| train     | 0 .. 999_999              |
| selection | 1_000_000 .. 1_999_999    |
| test      | 2_000_000 .. 2_999_999    |

`seeds("test", 10)` gives the first ten test seeds; `offset` picks a later
window of the same set (e.g. a second batch of training episodes).
"""

from __future__ import annotations

SEED_SET_SIZE = 1_000_000
SEED_SETS: dict[str, int] = {"train": 0, "selection": SEED_SET_SIZE, "test": 2 * SEED_SET_SIZE}


def seeds(name: str, num: int, offset: int = 0) -> list[int]:
  """The seeds `offset .. offset + num - 1` of the named set.

  Args:
    name: "train", "selection" or "test".
    num: how many seeds.
    offset: index of the first seed within the set.

  Returns:
    `num` distinct seeds, all inside the set.
  """
  if name not in SEED_SETS:
    raise ValueError(f"unknown seed set {name!r}; known: {', '.join(SEED_SETS)}")
  if num < 0 or offset < 0:
    raise ValueError(f"num and offset must be >= 0, got num={num}, offset={offset}")
  if offset + num > SEED_SET_SIZE:
    raise ValueError(f"seed set {name!r} holds {SEED_SET_SIZE} seeds; asked for {offset}+{num}")
  base = SEED_SETS[name]
  return list(range(base + offset, base + offset + num))


def seed_set_of(seed: int) -> str:
  """The name of the set that `seed` belongs to (raises for seeds outside all sets)."""
  for name, base in SEED_SETS.items():
    if base <= seed < base + SEED_SET_SIZE:
      return name
  raise ValueError(f"seed {seed} is in no named seed set")
