"""Prefix reuse of the agent's prompts: our cache-ordered layout vs the paper's, in one run.

    python benchmarks/prefix_reuse.py                         # 3 games, 2 episodes, 30 steps
    python benchmarks/prefix_reuse.py --games=nethack --episodes=4 --steps=60
    python benchmarks/prefix_reuse.py --structures=evolved     # only the evolved structures

For every request of an episode, the figure is the fraction of its prompt tokens
(the chat template applied, generation prompt included) that repeat a prefix of
the same episode's previous request -- what a prefix cache (SGLang's radix
cache) can reuse. Rows: per game and layout, the mean over requests (the first
request of an episode has no predecessor and is left out), the token-weighted
fraction, and the mean over the first request of each env step (the hardest
case: a new observation) and over the other requests (turns within a step).

Episodes are real (real envs, the unmodified shipped structures -- each game's
v0 and its evolved structure, whose pinned file views, harness files, modes
and action checks change the prompts -- the real agent and runner); the completions come from a scripted memory policy (search, append a
line to a log file, DONE; search, ACTION of a seeded random action), the same
for both layouts, because the tiny random model rarely writes a valid command
and its episodes would not exercise multi-turn LOG/PLAN phases. Layouts:
  cached  ours: system (fixed) -> file index -> append-only history -> observation
  paper   the paper's: the system prompt holds the file index (with sizes) and
          the current observation after the fixed instructions, so its tail
          changes at every step
  paper_first  the same with the observation and index before the instructions
Tokens come from the tiny offline tokenizer (about 1.65 characters per token);
the character-level figure is printed beside it as a tokenizer-free check.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import re
import sys
import tempfile

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script

import itertools

from automem.agent import AgentConfig, prompts
from automem.llm import LLMResult
from automem.memory import load_structure
from automem.models.tiny import tiny_tokenizer
from automem.rollout import EpisodePlan, GameSetup, RunDir, Runner, episode_id, seeds

_GAMES = flags.DEFINE_list("games", ["crafter", "minihack", "nethack"], "Games to play.")
_EPISODES = flags.DEFINE_integer("episodes", 2, "Episodes per game.")
_STEPS = flags.DEFINE_integer("steps", 30, "Env steps per episode (step cap).")
_STRUCTURES = flags.DEFINE_list("structures", ["v0", "evolved"],
                                "Shipped structures of each game to play (v0, evolved).")
_TASKS = {"crafter": "crafter", "minihack": "MiniHack-Corridor-R3-v0",
          "nethack": "NetHackChallenge-v0"}


class ScriptedMemoryPolicy:
  """A stand-in LLM that writes plausible memory commands, recording every prompt.

  The completion depends only on (episode, step, phase, turn) and the action list
  in the system prompt, so both layouts play the same episodes.
  """

  def __init__(self, tokenizer):
    self.tokenizer = tokenizer
    self.prompts: dict[str, list[tuple[int, str, list[int], str]]] = collections.defaultdict(list)

  async def generate(self, requests):
    return [self._one(r) for r in requests]

  async def close(self):
    pass

  def _one(self, req):
    eid, step, phase, turn = req.request_id.rsplit("/", 3)
    step, turn = int(step), int(turn)
    messages = [dict(m) for m in req.messages]
    ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    text = "".join(m["content"] for m in messages)
    self.prompts[eid].append((step, f"{phase}{turn}", list(ids), text))
    system = messages[0]["content"]
    actions = _actions(system)
    # The file index lines of either layout: "- name: ..." or "- name (3 lines, ...): ...".
    files = list(dict.fromkeys(re.findall(r"^- ([\w.-]+\.(?:txt|md))\b", text, re.M)))
    files = files or ["notes.txt"]
    log_file = next((f for f in files if "log" in f), files[-1])
    rng = random.Random(f"{eid}/{step}")
    if phase == "log":
      if turn == 0:
        completion = f"<|SEARCH|>{log_file}|step {step - 1}<|END|>"
      else:
        completion = (f"<|APPEND|>{log_file}|Step {step - 1}: noted what happened after "
                      f"'{rng.choice(actions)}'<|END|>\n<|DONE|>")
    elif turn == 0:
      completion = f"<|SEARCH|>{rng.choice(files)}|{rng.choice(actions).split()[0]}<|END|>"
    else:
      completion = f"<|ACTION|>{rng.choice(actions)}<|END|>"
    return LLMResult(text=completion, finish_reason="stop", prompt_tokens=len(ids),
                     completion_tokens=len(completion) // 4)


def _actions(system: str) -> list[str]:
  block = system.split("VALID GAME ACTIONS", 1)[1].split("\n", 1)[1]
  names = []
  for line in block.split("\n"):
    if not line.strip():
      break
    names.append(line.strip())
  return names


def play(layout: str, tokenizer, variant: str) -> ScriptedMemoryPolicy:
  policy = ScriptedMemoryPolicy(tokenizer)
  setups, plans = {}, []
  for game in _GAMES.value:
    kw = {"max_steps": _STEPS.value}
    if game != "crafter":
      kw["num_workers"] = 1
    structure = load_structure(game, "" if variant == "v0" else variant)
    setups[game] = GameSetup(game, structure, kw, envs_per_task=_EPISODES.value)
    task = _TASKS[game]
    for seed in seeds("test", _EPISODES.value):
      plans.append(EpisodePlan(episode_id(game, task, seed), game, task, seed, "test"))
  with tempfile.TemporaryDirectory() as tmp:
    runner = Runner(RunDir(tmp), setups, plans, {"base": policy},
                    AgentConfig(layout=layout), progress=False)
    asyncio.run(runner.arun())
  return policy


def reuse(policy: ScriptedMemoryPolicy) -> dict[str, dict[str, float]]:
  out: dict[str, dict[str, list[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
  for eid, reqs in policy.prompts.items():
    game = eid.split("-")[0]
    acc = out[game]
    for (_, _, prev_ids, prev_text), (step, kind, ids, text) in itertools.pairwise(reqs):
      shared = prompts.shared_prefix_len(prev_ids, ids)
      frac = shared / len(ids)
      acc["fraction"].append(frac)
      acc["shared"].append(shared)
      acc["tokens"].append(len(ids))
      acc["chars"].append(prompts.shared_prefix_len(prev_text, text) / len(text))
      first_of_step = kind in ("log0",) or (kind == "plan0" and not any(
          s == step and k.startswith("log") for s, k, _, _ in reqs))
      acc["first" if first_of_step else "within"].append(frac)
  mean = lambda v: sum(v) / len(v) if v else float("nan")  # noqa: E731
  return {g: {"requests": len(a["fraction"]), "mean": mean(a["fraction"]),
              "weighted": sum(a["shared"]) / sum(a["tokens"]),
              "first_of_step": mean(a["first"]), "within_step": mean(a["within"]),
              "chars": mean(a["chars"]), "tokens": mean(a["tokens"])}
          for g, a in out.items()}


def main(argv):
  del argv
  tokenizer = tiny_tokenizer()
  layouts = ("cached", "paper", "paper_first")
  rows = {(v, layout): reuse(play(layout, tokenizer, v))
          for v in _STRUCTURES.value for layout in layouts}
  print(f"episodes per game: {_EPISODES.value}, steps: {_STEPS.value}, structures: "
        f"{', '.join(_STRUCTURES.value)}, scripted memory policy, tiny tokenizer")
  head = (f"{'game':<10} {'structure':<9} {'layout':<7} {'requests':>8} {'tokens/req':>10} "
          f"{'reuse mean':>10} "
          f"{'weighted':>9} {'1st of step':>11} {'within step':>11} {'chars':>6} {'vs paper':>8}")
  head = head.replace("layout ", "layout     ")
  print(head)
  print("-" * len(head))
  for game in _GAMES.value:
    for v, layout in itertools.product(_STRUCTURES.value, layouts):
      r = rows[v, layout][game]
      ratio = r["mean"] / max(rows[v, "paper"][game]["mean"], 1e-9)
      print(f"{game:<10} {v:<9} {layout:<11} {r['requests']:>8} {r['tokens']:>10.0f} {r['mean']:>10.3f} "
            f"{r['weighted']:>9.3f} {r['first_of_step']:>11.3f} {r['within_step']:>11.3f} "
            f"{r['chars']:>6.3f} {ratio:>7.2f}x")
  print("'vs paper' = reuse mean / the paper layout's; target: reuse mean >= 0.8 for cached")


if __name__ == "__main__":
  app.run(main)
