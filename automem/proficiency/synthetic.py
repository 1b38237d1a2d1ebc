"""Tiny synthetic trajectories in the real file format, for tests and the offline default config.

Each episode has a handful of LOG turns whose completion logs the newest
observation with an APPEND (sometimes an UPSERT), wraps it in a little prose
and ends with DONE; every third turn also carries an ACTION (untrained) and
every fifth a failed command, so the loss mask has something to exclude. The
target text is a deterministic function of the prompt, so a model can learn it.
"""

from __future__ import annotations

import json
import os

import numpy as np

_THINGS = ("tree", "water", "stone", "cow", "zombie", "table", "sapling", "coal", "iron", "lava")
_DIRS = ("north", "south", "east", "west")


def _command(op: str, *args: str) -> str:
  if op == "DONE":
    return "<|DONE|>"
  return f"<|{op}|>{'|'.join(args)}<|END|>"


def synthetic_turn(episode: int, step: int, rng: np.random.Generator
                   ) -> tuple[list[dict[str, str]], str, list[dict]]:
  """Messages, completion and commands (with character spans) of one LOG turn."""
  thing = _THINGS[int(rng.integers(len(_THINGS)))]
  where = _DIRS[int(rng.integers(len(_DIRS)))]
  messages = [
      {"role": "system", "content": "You keep the agent's memory files. Log what matters."},
      {"role": "user", "content": f"Episode {episode}, step {step}. You see a {thing} to the "
                                  f"{where}. Write memory commands, then DONE."},
  ]
  parts: list[tuple[str, str | None, bool]] = [("Noting the observation.\n", None, True)]
  parts.append((_command("APPEND", "log.md", f"step {step}: {thing} {where}"), "APPEND", True))
  if step % 2 == 0:
    parts.append(("\n", None, True))
    parts.append((_command("UPSERT", "map.md", thing, where), "UPSERT", True))
  if step % 5 == 4:
    parts.append(("\n", None, True))
    parts.append((_command("READ", "missing.md"), "READ", False))
  if step % 3 == 2:
    parts.append(("\n", None, True))
    parts.append((_command("ACTION", "noop"), "ACTION", True))
  parts.append(("\n", None, True))
  parts.append((_command("DONE"), "DONE", True))
  text, commands = "", []
  for piece, op, ok in parts:
    if op is not None:
      commands.append({"op": op, "args": [], "span": [len(text), len(text) + len(piece)],
                       "ok": ok, "result": "ok" if ok else "error: no such file"})
    text += piece
  return messages, text, commands


def write_synthetic_trajectories(out_dir: str, num_episodes: int = 8, steps: int = 6,
                                 seed: int = 0) -> list[str]:
  """Writes `<out_dir>/trajectories/<episode_id>.jsonl` files; returns their paths."""
  tdir = os.path.join(out_dir, "trajectories")
  os.makedirs(tdir, exist_ok=True)
  rng = np.random.default_rng(seed)
  paths = []
  for e in range(num_episodes):
    eid = f"synthetic-{seed}-{e:04d}"
    path = os.path.join(tdir, f"{eid}.jsonl")
    with open(path, "w") as f:
      f.write(json.dumps({"type": "header", "episode_id": eid, "game": "synthetic",
                          "task": "log", "seed": seed * 100000 + e,
                          "structure_version": "v0"}) + "\n")
      for step in range(steps):
        messages, completion, commands = synthetic_turn(e, step, rng)
        action = next((c for c in commands if c["op"] == "ACTION"), None)
        f.write(json.dumps({
            "type": "turn", "episode_id": eid, "step": step, "phase": "log", "turn": 0,
            "role": "specialist", "messages": messages, "completion": completion,
            "commands": commands, "action": "noop" if action else None, "reward": 0.0,
            "memory_diff": {}}) + "\n")
        f.write(json.dumps({
            "type": "turn", "episode_id": eid, "step": step, "phase": "plan", "turn": 0,
            "role": "base", "messages": messages[:1], "completion": _command("ACTION", "noop"),
            "commands": [{"op": "ACTION", "args": ["noop"], "span": [0, 21], "ok": True,
                          "result": ""}],
            "action": "noop", "reward": 0.0, "memory_diff": {}}) + "\n")
      f.write(json.dumps({"type": "end", "stats": {"return": 0.0, "length": steps}}) + "\n")
    paths.append(path)
  return paths
