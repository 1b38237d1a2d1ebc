"""Batched text environments: one protocol, three games, a CPU worker pool.

`make_env(game, num_envs, **kwargs)` builds a `TextEnv`; game modules are
imported lazily so importing this package pulls in neither JAX nor NLE.
"""

from __future__ import annotations

import importlib
from typing import Any

from automem.envs.base import (
    END_REASONS,
    ActionCheck,
    ActionReader,
    EpisodeStats,
    NameReader,
    Observation,
    StepResult,
    TextEnv,
    normalize_action_name,
)
from automem.envs.crafter_metrics import ACHIEVEMENTS as CRAFTER_ACHIEVEMENTS
from automem.envs.crafter_metrics import crafter_score, success_rates
from automem.envs.pool import EnvPool, host_slots
from automem.envs.slots import SerialEnv, SlotEnv

# game name -> "module:factory". Each factory takes (num_envs, **kwargs).
_REGISTRY: dict[str, str] = {
    "crafter": "automem.envs.crafter:CrafterEnv",
    "crafter_original": "automem.envs.crafter_original:CrafterOriginalEnv",
    "minihack": "automem.envs.minihack:MiniHackEnv",
    "nethack": "automem.envs.nethack:NetHackEnv",
}


def register_env(game: str, target: str) -> None:
  """Registers a `TextEnv` factory under `game` as "module:callable"."""
  _REGISTRY[game] = target


def available_games() -> tuple[str, ...]:
  return tuple(sorted(_REGISTRY))


def make_env(game: str, num_envs: int = 1, **kwargs: Any) -> TextEnv:
  """Builds a batched text env for `game` with `num_envs` slots."""
  if game not in _REGISTRY:
    raise ValueError(f"unknown game {game!r}; available: {', '.join(available_games())}")
  module_name, attr = _REGISTRY[game].split(":")
  factory = getattr(importlib.import_module(module_name), attr)
  return factory(num_envs=num_envs, **kwargs)


__all__ = [
    "CRAFTER_ACHIEVEMENTS",
    "END_REASONS",
    "ActionCheck",
    "ActionReader",
    "EnvPool",
    "EpisodeStats",
    "NameReader",
    "Observation",
    "SerialEnv",
    "SlotEnv",
    "StepResult",
    "TextEnv",
    "available_games",
    "crafter_score",
    "host_slots",
    "make_env",
    "normalize_action_name",
    "register_env",
    "success_rates",
]
