"""Loop 1 test fixtures: a tiny MiniHack loop config and the scripted structure-sensitive agent.

MiniHack-Room-5x5 with a step cap of 6 is played by `StructureSensitiveAgent`
(tests/support/scripted_agent.py): its play depends on the memory files the
structure declares, so a planted revision has a real effect on real episodes.
"""

from __future__ import annotations

import pytest

from automem.models import SamplingParams
from automem.structure.proposer import Proposal
from experiments.configs.optimize_structure import get_config
from tests.support.llm_server import LLMTestServer
from tests.support.scripted_agent import StructureSensitiveAgent


def loop_config(**over):
  c = get_config("game=minihack")
  g = c.eval.game.minihack
  g.tasks = ("MiniHack-Room-5x5-v0",)
  g.max_steps = 6
  g.envs_per_task = 3
  g.env_kwargs = {"num_workers": 0, "success_rule": "goal"}  # every solved episode counts
  g.structure_overrides = {"fallback_action": "west"}  # Room-5x5 offers no "search"
  c.eval.llm.backend = "openai"  # never built: the scripted agent is injected
  c.eval.agent.max_prompt_chars = 0  # no trimming: the scripted agent reads the file index
  c.race.stages = (6, 6)
  c.race.confirm_seeds = 2
  c.review.episodes = 2
  c.final.episodes = 3
  c.continuation = False
  c.merge_every = 0
  c.pareto_every = 0
  for k, v in over.items():
    node, _, leaf = k.rpartition(".")
    (c[node] if node else c)[leaf] = v
  return c


def add_file(ctx, name: str) -> Proposal:
  n = len(ctx.structure.files)
  return Proposal({f"files.{n}": {"name": name, "description": "planted"}}, f"add {name}",
                  proposer="planted")


class PlantedProposer:
  """Round 0 proposes route.txt (the agent walks to the goal), round 1 blocker.txt (it never
  moves)."""

  name = "planted"

  def __init__(self):
    self.calls = 0

  def propose(self, ctx):
    self.calls += 1
    return [add_file(ctx, "route.txt" if ctx.round == 0 else "blocker.txt")]


@pytest.fixture
def agent():
  return StructureSensitiveAgent(skill=0.5)


@pytest.fixture
def reviewer_server(tiny_tokenizer):
  """An API double for the reviewer: scripted tool calls only (no engine behind it)."""
  with LLMTestServer(None, tiny_tokenizer, SamplingParams, api_key="k") as server:
    yield server
