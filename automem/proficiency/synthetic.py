"""Tiny synthetic trajectories in the real file format, for tests and the offline default config.

Each episode has a handful of LOG turns whose completion logs the newest
observation with an APPEND (sometimes an UPSERT), wraps it in a little prose
and ends with DONE; every third turn also carries an ACTION (untrained) and
every fifth a failed command, so the loss mask has something to exclude. The
target text is a deterministic function of the prompt, so a model can learn it.
"""

from __future__ import annotations

import os

import numpy as np

from automem.agent.trajectory import End, Header, Step, Turn, write_trajectory
from automem.memory import ALL_OPS, MemoryStore, diff_snapshots, execute, parse_commands

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
  """Writes `<out_dir>/trajectories/<episode_id>.jsonl` files; returns their paths.

  They go through the trajectory records and writer the runner uses; the
  commands really run on a memory store (`<out_dir>/memory/<episode_id>`),
  so results, returned lines and memory diffs are what the agent would record.
  """
  tdir = os.path.join(out_dir, "trajectories")
  os.makedirs(tdir, exist_ok=True)
  rng = np.random.default_rng(seed)
  paths = []
  for e in range(num_episodes):
    eid = f"synthetic-{seed}-{e:04d}"
    store = MemoryStore(os.path.join(out_dir, "memory", eid))
    store.reset()
    header = Header(episode_id=eid, game="synthetic", task="log", seed=seed * 100000 + e,
                    structure_version="v0", action_names=["noop"],
                    initial_memory=store.snapshot())
    records: list = []
    for step in range(steps):
      messages, completion, _ = synthetic_turn(e, step, rng)
      records.append(run_turn(store, eid, step, "log", messages, completion))
      records.append(run_turn(store, eid, step, "plan", messages[:1], _command("ACTION", "noop")))
      records.append(Step(episode_id=eid, step=step, action="noop", observation=messages[-1]
                          ["content"], progression=100.0 * step / max(steps, 1)))
    records.append(End(episode_id=eid, stats={"episode_return": 0.0, "length": steps},
                       final_memory=store.snapshot(),
                       replay={"seed": header.seed, "actions": ["noop"] * steps}))
    path = os.path.join(tdir, f"{eid}.jsonl")
    write_trajectory(path, header, records)
    paths.append(path)
  return paths


def run_turn(store: MemoryStore, eid: str, step: int, phase: str,
              messages: list[dict[str, str]], completion: str) -> Turn:
  """One turn whose commands really run on `store`, recorded as the agent records it."""
  before = store.snapshot()
  items = []
  for item in parse_commands(completion).items:  # as the agent: nothing after DONE / ACTION runs
    items.append(item)
    if getattr(item, "op", "") == ("DONE" if phase == "log" else "ACTION"):
      break
  results = execute(store, items, phase=phase, allowed_ops=ALL_OPS)
  action = next((r.args[0] for r in results if r.op == "ACTION" and r.ok), None)
  return Turn(episode_id=eid, step=step, phase=phase, subphase=phase, turn=0,
              role="specialist" if phase == "log" else "base", messages=messages,
              completion=completion, commands=[r.to_record() for r in results], action=action,
              reward=0.0, memory_diff=diff_snapshots(before, store.snapshot()),
              phase_end="done" if phase == "log" else "action")
