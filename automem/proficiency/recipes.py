"""Loop 2 recipes: how one specialist is made (selectors, data size, LoRA shape, lr, epochs).

`recipe_grid(grid)` expands a config's grid (every field a tuple) into the
cartesian product of recipes, each with a stable id; `train_config(base, recipe,
...)` is the trainer config (`experiments/configs/train_proficiency.py`) of one.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import math

import ml_collections

TARGETS = {
    "attn": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "all": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
}


@dataclasses.dataclass(frozen=True)
class Recipe:
  """One specialist recipe.

  Attributes:
    selectors: "filters/scorers", each a ';'-list (e.g. "top_episodes/usage;requery";
      "usage" alone means no filters).
    examples: selected turns trained on at most (the best-ranked first; 0 = all).
    rank, alpha: LoRA rank and alpha (scale alpha / rank).
    targets: "attn" | "all" (attention projections, or those plus the MLP).
    lr: peak learning rate.
    epochs: passes over the training rows (sets the step count).
  """

  selectors: str = "usage"
  examples: int = 0
  rank: int = 8
  alpha: float = 16.0
  targets: str = "all"
  lr: float = 2e-4
  epochs: float = 2.0

  def __post_init__(self):
    if self.targets not in TARGETS:
      raise ValueError(f"recipe targets must be one of {sorted(TARGETS)}, got {self.targets!r}")
    if self.rank < 1 or self.epochs <= 0 or self.lr <= 0 or self.examples < 0:
      raise ValueError(f"bad recipe {self}: rank >= 1, epochs > 0, lr > 0, examples >= 0")
    _, scorers = split_selectors(self.selectors)
    if not scorers:
      raise ValueError(f"recipe selectors {self.selectors!r} name no scorer")

  @property
  def id(self) -> str:
    digest = hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode())
    return f"{self.selectors.replace('/', '-').replace(';', '+')}-r{self.rank}-" \
           f"{digest.hexdigest()[:6]}"


def split_selectors(spec: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """("filters", "scorers") of a "filters/scorers" spec."""
  filters, _, scorers = spec.rpartition("/")
  return (tuple(s for s in filters.split(";") if s), tuple(s for s in scorers.split(";") if s))


def recipe_grid(grid: ml_collections.ConfigDict, limit: int = 0) -> list[Recipe]:
  """The cartesian product of the grid's tuples (the first `limit` of them; 0 = all)."""
  fields = [f.name for f in dataclasses.fields(Recipe)]
  unknown = set(grid.keys()) - set(fields)
  if unknown:
    raise ValueError(f"unknown recipe grid fields {sorted(unknown)}; known: {fields}")
  axes = [tuple(grid[f]) if f in grid else (getattr(Recipe, f),) for f in fields]
  out = [Recipe(**dict(zip(fields, values))) for values in itertools.product(*axes)]
  return out[:limit] if limit else out


def train_config(base: ml_collections.ConfigDict, recipe: Recipe, *, selection: str,
                 base_model: str, rows: int) -> ml_collections.ConfigDict:
  """The trainer config of `recipe` on `rows` packed training rows from `selection`."""
  c = copy.deepcopy(base)
  with c.unlocked():
    c.finetune = "lora"
    c.export.kind = "lora"
    c.model.checkpoint = base_model
    c.data.selection = selection
    c.data.trajectories = ""
    c.lora.rank = recipe.rank
    c.lora.alpha = recipe.alpha
    c.lora.target_modules = TARGETS[recipe.targets]
    c.optim.learning_rate = recipe.lr
    per_step = c.batch.micro_batch * c.batch.accum_steps
    c.steps = max(1, math.ceil(recipe.epochs * rows / per_step))
    c.optim.warmup_steps = min(c.optim.warmup_steps, max(0, c.steps - 1))
  return c
