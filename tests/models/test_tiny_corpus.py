"""The tiny model's corpus speaks the real command language and the envs' action names."""

from __future__ import annotations

import re

from automem.envs.crafter_text import ACTION_NAMES
from automem.envs.nle_actions import NAMED_ACTIONS
from automem.memory import load_structure, parse_commands
from automem.models.tiny import agent_chats


def test_agent_chats_use_the_parser_and_the_action_names():
  chats = agent_chats(num_episodes=8, seed=3)
  assert len(chats) >= 8
  games = set()
  log_ops, actions = set(), set()
  for segs in chats:
    text = "".join(t for t, _ in segs)
    game = re.search(r"You are an agent playing (\w+)", text).group(1).lower()
    games.add(game)
    structure = load_structure(game)
    names = ACTION_NAMES if game == "crafter" else tuple(NAMED_ACTIONS)
    completions = [t[: -len("<|im_end|>")] for t, is_completion in segs if is_completion]
    assert completions and all(t.endswith("<|im_end|>") for t, c in segs if c)
    for c in completions:
      parsed = parse_commands(c)
      assert not parsed.errors, (c, parsed.errors)
      assert parsed.commands or c == ""
      for cmd in parsed.commands:
        if cmd.op == "ACTION":
          assert cmd.args[0] in names
          actions.add(cmd.args[0])
        elif cmd.op != "DONE":
          assert cmd.op in structure.log.allowed_ops
          log_ops.add(cmd.op)
    # Every step's last completion commits an action.
    assert parse_commands(completions[-1]).action is not None
    # A turn's commands ran on a real store: their results open the next prompt.
    first = [c for c in parse_commands(completions[0]).commands if c.op not in ("DONE", "ACTION")]
    if len(completions) > 1 and first:
      assert re.search(r"\[(SEARCH|READ|TAIL|COUNT|APPEND|WRITE|CREATE)", text), text[-2000:]
  assert games == {"crafter", "minihack", "nethack"}
  assert {"APPEND", "SEARCH"} <= log_ops
  assert len(actions) > 5
