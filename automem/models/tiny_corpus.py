"""The tiny offline model's corpus: agent chats on real games, in the agent's own layout.

Each synthetic episode plays a real env (Crafter's text from the original `crafter`
package, which renders the same text as Craftax without a compile; MiniHack; NetHack)
with scripted actions, and renders every step's chat the way the memory agent does in its
default (`cached`) layout: the combined system text with the env's offered action names,
LOG turns (commands of the real language, run on a real `MemoryStore`, their results in
the follow-up), the PLAN turn that commits one of the offered names, the structure's
observers' notes, history lines and outcomes with the env's real feedback, and the parts a
prompt-size cap leaves out. Only the completions are scripted. Nothing here imports the
agent (models sit below it); what the agent's prompt assembly does is repeated from the
structure's own texts.
"""

from __future__ import annotations

import dataclasses
import os
import random
import tempfile
from collections.abc import Sequence
from typing import Any

# What the embedded CPU run puts in place of the game rules, and its turn limits (the
# structure overrides of experiments/configs/evaluate.py): most episodes play with these.
SHORT_RULES = "(left out of the embedded CPU run to fit the tiny model's context)"
EMBEDDED_REVISION = {"log.max_iterations": 2, "plan.max_iterations": 2, "game_rules": SHORT_RULES}
# The agent's prompt cap in the embedded run (experiments/configs/evaluate.py), and the order
# in which a first message past it leaves parts out (automem.agent.episode).
_PROMPT_CAP = 5200
_TRIM_ORDER = ("helpers", "pinned", "history", "file_index")

# game -> (env registered name, task ids played); MiniHack plays a few BALROG tasks.
_ENVS = {
    "crafter": ("crafter_original", ("crafter",)),
    "minihack": ("minihack", ("MiniHack-Corridor-R3-v0", "MiniHack-MazeWalk-9x9-v0",
                              "MiniHack-Quest-Easy-v0")),
    "nethack": ("nethack", ("NetHackChallenge-v0",)),
}
# Env seeds of the scripted episodes: past the named seed sets (automem.rollout.seeds: train,
# selection, test start at 0, 1e6, 2e6), so no evaluated episode is in the corpus.
_SEED_BASE = 9_000_000
_MOVES = ("north", "east", "south", "west", "northeast", "southeast", "southwest", "northwest")
# The actions a scripted episode mostly plays: moves, Do, search (valid in every task).
_COMMON = ("move west", "move east", "move north", "move south", "do", "search", *_MOVES)
_THINGS = ("grass", "tree", "water", "stone", "coal", "iron", "diamond", "sand", "lava", "table",
           "furnace", "plant", "zombie", "skeleton", "cow", "door", "wall", "fountain", "key",
           "staircase", "monster", "gold", "potion", "scroll", "wand", "ring", "dagger")
_DIRS = ("north", "south", "east", "west", "north-east", "south-west", "left", "right")


@dataclasses.dataclass(frozen=True)
class ChatSegment:
  """A piece of one step's chat text; completions are what the model learns to write, except
  a `refused` one (a name the env refuses, there to show the recovery that follows)."""

  text: str
  completion: bool = False
  refused: bool = False


# One chat: its segments, and how many leading characters hold the system text up to the end
# of the action list (the part a pretraining window keeps in view, see `pretrain_tiny_model`).
Chat = tuple[list[ChatSegment], int]


def _note(r: random.Random, step: int, action: str, outcome: str) -> str:
  return r.choice((f"Step {step} '{action}': {outcome[:40]}",
                   f"{r.choice(_THINGS)} {r.choice(_DIRS[:4])} of {r.choice(_THINGS)}",
                   f"need {r.choice(_THINGS)}"))


def _log_command(r: random.Random, files: list[str], step: int, action: str,
                 outcome: str) -> str:
  """One LOG-phase command of the real language (valid arguments, existing files)."""
  from automem.memory import render_command

  f, kind = r.choice(files), r.randrange(10)
  if kind < 5:
    return render_command("APPEND", f, _note(r, step, action, outcome))
  if kind < 7:
    return render_command("SEARCH", r.choice([f, "*"]), r.choice(_THINGS + _MOVES))
  if kind == 7:
    return render_command("TAIL", f, str(r.randint(1, 5)))
  if kind == 8:
    return render_command("COUNT", f)
  return render_command("READ", f)


def _plan_lookup(r: random.Random, files: list[str]) -> str:
  from automem.memory import render_command

  return render_command(r.choice(("SEARCH", "SEARCH", "TAIL", "COUNT")), r.choice(files),
                        r.choice(_THINGS + _MOVES))


class _Episode:
  """One scripted episode on a real env, rendered as the agent's requests (cached layout).

  Mirrors `automem.agent.EpisodeAgent`: first messages trimmed past the prompt cap, a LOG
  phase cut when its prompt outgrows the cap (PLAN then starts afresh), the follow-ups
  with command results, history lines and observers' notes (a test replays the corpus
  through the real agent and compares every request).
  """

  def __init__(self, r: random.Random, game: str, task: str, env: Any, root: str, first: Any,
               *, cap: int | None = None, embedded: bool | None = None):
    from automem.memory import MemoryStore, load_structure
    from automem.memory.observers import StepView

    self.r, self.game, self.task, self.env = r, game, task, env
    structure = load_structure(game)
    if embedded if embedded is not None else r.random() < 0.9:
      structure = structure.revise(EMBEDDED_REVISION, "embedded run")
    self.st = structure = structure.for_task(task)
    self.cap = cap if cap is not None else (_PROMPT_CAP if r.random() < 0.8 else 0)
    self.store = MemoryStore.from_structure(root, structure)
    self.store.reset()
    hints = env.action_reader.hints
    self.actions = list(env.action_names)
    self.common = [a for a in self.actions if a.lower() in _COMMON] or self.actions
    self.fallback = structure.resolve_fallback(self.actions) or self.actions[0]
    offered = [f"{a} ({hints[a]})" if a in hints else a for a in self.actions]
    self.system = structure.system_text(offered, task)
    head = self.system.find(structure.text("log_header"))
    self.head_chars = len("<|im_start|>system\n") + (head if head > 0 else len(self.system))
    self.obs = first
    self.ended = False
    self.views = [StepView(None, 0.0, first.text, dict(first.info))]
    self.history: list[str] = []
    self.last_action = structure.text("no_last_action")
    self.last_outcome = structure.text("first_outcome")
    self.step = 0
    self.turns: list[str] = []  # the step's message contents so far (the agent's `_turns`)
    self.refused: set[int] = set()  # indices in `turns` of refused completions
    self.out: list[Chat] = []

  def _index(self) -> str:
    rows = []
    for f in self.store.index():
      ro = self.st.texts["read_only"] if self.store.is_read_only(f.name) else ""
      rows.append(f"- {f.name}{ro}: {f.description}" if f.description else f"- {f.name}{ro}")
    return "\n".join(rows) if rows else self.st.texts["no_files"]

  def _helpers(self, phase: str) -> str:
    from automem.memory.observers import run_observers

    return run_observers(self.st.observers_for(phase), self.views)

  def _used(self) -> int:
    return len(self.system) + sum(len(t) for t in self.turns)

  def _user(self, phase: str, shown: bool) -> str:
    """The phase's first message of a step, parts left out past the cap as the agent does."""
    from automem.memory.structure import history_window_start

    st = self.st
    window = self.history[history_window_start(len(self.history), st.history_length):]
    values = {"file_index": self._index(),
              "history": st.text("history_above") if shown else (
                  "\n".join(window) or st.text("no_history")),
              "pinned": "", "step": self.step, "helpers": self._helpers(phase),
              "last_action": self.last_action, "last_outcome": self.last_outcome,
              "observation": st.text("see_above") if shown else self.obs.text}
    text = st.user_prompt(phase, **values)
    if self.cap:
      used = self._used()
      for part in _TRIM_ORDER:
        if used + len(text) <= self.cap:
          break
        if values[part] and part in st.placeholders(phase, "user"):
          values[part] = st.text("trimmed")
          text = st.user_prompt(phase, **values)
    return text

  def _run(self, phase: str, text: str) -> str:
    from automem.memory import execute, format_results, parse_commands

    return format_results(execute(self.store, parse_commands(text), phase=phase,
                                  structure=self.st))

  def _emit(self) -> None:
    """The step's chat so far (system, then user/assistant turns) as one training chat."""
    segs = [ChatSegment(f"<|im_start|>system\n{self.system}<|im_end|>\n")]
    for k, text in enumerate(self.turns):
      if k % 2 == 0:
        segs.append(ChatSegment(f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"))
      else:
        segs += [ChatSegment(f"{text}<|im_end|>", True, k in self.refused),
                 ChatSegment("\n")]
    if len(segs) > 1:
      self.out.append((segs, self.head_chars))

  def _over(self) -> bool:
    return self.cap > 0 and self._used() > self.cap

  def _plan_afresh(self) -> None:
    """The agent's answer to a PLAN prompt past the cap after LOG: PLAN without the step's
    LOG turns (memory has them); those turns were a chat of their own."""
    first = self._user("plan", False)
    self._emit()
    self.turns, self.refused = [first], set()

  def _step(self) -> str | None:
    """One env step's turns; the action committed (None: the fallback is played)."""
    r, st = self.r, self.st
    self.turns, self.refused = [], set()
    if self.step > 0 or st.log_first_step:
      self.turns.append(self._user("log", False))
      limit = r.choice((1, 2, 2, st.log.max_iterations))
      for i in range(st.log.max_iterations):
        if i > 0 and self._over():  # the agent cuts LOG: its last results, then PLAN
          last = self.turns.pop()
          cut = st.text("prompt_cut", limit=self.cap)
          self.turns.append(f"{last}\n\n{cut}\n\n{self._user('plan', True)}")
          self._plan_afresh()
          break
        done = i + 1 >= limit or r.random() < 0.7
        files = [f.name for f in self.store.index()]
        cmds = [_log_command(r, files, self.step, self.last_action, self.last_outcome)
                for _ in range(r.choice((0, 0, 1, 1, 1, 2)))]
        completion = "".join(cmds) + ("<|DONE|>" if done else "")
        self.turns.append(completion)
        results = self._run("log", completion)
        if done or i + 1 >= st.log.max_iterations:
          note = "" if done else st.text("log_limit", limit=st.log.max_iterations) + "\n\n"
          self.turns.append(f"{results}\n\n{note}{self._user('plan', True)}")
          if self._over():
            self._plan_afresh()
          break
        self.turns.append(st.follow_up_prompt("log", results=results, file_index=self._index(),
                                              helpers=self._helpers("log"), step=self.step))
    else:
      self.turns.append(self._user("plan", False))
    action = r.choice(self.common if r.random() < 0.85 else self.actions)
    first = r.random()
    wrong = self._wrong_name() if first >= 0.1 and first < 0.3 else None
    if st.plan.max_iterations > 1 and (first < 0.1 or wrong is not None):
      # A lookup first, or a name the env refuses (the follow-up lists the offered ones,
      # and the next turn commits one of them); the embedded run allows two PLAN turns.
      if wrong is None:
        first_turn = _plan_lookup(r, [f.name for f in self.store.index()])
        results = self._run("plan", first_turn)
        note = "\n\n" + st.text("no_action")
      else:
        first_turn = f"<|ACTION|>{wrong}<|END|>"
        results, note = self._refused(first_turn, wrong), ""
        self.refused.add(len(self.turns))
      self.turns.append(first_turn)
      follow = st.follow_up_prompt("plan", results=results, file_index=self._index(),
                                   helpers=self._helpers("plan"), step=self.step) + note
      if self.cap > 0 and self._used() + len(follow) > self.cap:
        self._emit()  # the agent plays the fallback without asking again
        return None
      self.turns.append(follow)
    self.turns.append(f"<|ACTION|>{action}<|END|>")
    self._emit()
    return action

  def _wrong_name(self) -> str | None:
    """A name a model gets wrong here (another game's, the prompt's placeholder), when the
    env refuses it and the structure's aliases do not repair it."""
    crafter = self.game == "crafter"
    name = self.r.choice(("west", "north", "southeast", "search", "name", "Move", "go east")
                         if crafter else ("Move West", "Do", "name", "go north", "Move North"))
    check = self.env.check_action(name)
    if check.action is not None or self.st.repair_action(name, self.actions) is not None:
      return None
    return name

  def _refused(self, completion: str, name: str) -> str:
    """The results the agent shows for an ACTION the env refuses."""
    from automem.memory import execute, format_results, parse_commands

    results = execute(self.store, parse_commands(completion), phase="plan", structure=self.st)
    check = self.env.check_action(name)
    text = f"[ERROR ACTION] {check.feedback}" if check.name is not None else self.st.text(
        "unknown_action", action=name, actions=", ".join(self.actions))
    results[-1] = dataclasses.replace(results[-1], ok=False, text=text)
    return format_results(results)

  def play(self, n_steps: int) -> list[Chat]:
    for self.step in range(n_steps):
      action = self._step()
      if not self._act(action if action is not None else self.fallback, action is None):
        break
    return self.out

  def _act(self, action: str, fallback: bool) -> bool:
    """Plays `action` on the env; False when the episode ended."""
    from automem.memory.observers import StepView

    st = self.st
    res = self.env.step([action])[0]
    outcome = st.text("outcome", reward=f"{float(res.reward):g}")
    if fallback:
      outcome += st.text("outcome_fallback")
    if res.feedback:
      outcome += st.text("outcome_feedback", feedback=res.feedback)
    if res.done:
      outcome += st.text("outcome_end", reason=res.stats.end_reason)
    self.history.append(st.text("history_line", step=self.step, action=action, outcome=outcome))
    self.views.append(StepView(action, float(res.reward), res.observation.text,
                               dict(res.observation.info), res.valid_action,
                               tuple(res.stats.achievements)))
    self.obs, self.last_action, self.last_outcome = res.observation, action, outcome
    self.ended = bool(res.done)
    return not res.done


def agent_chats(num_episodes: int = 120, seed: int = 0,
                games: Sequence[str] = ("crafter", "minihack", "crafter", "nethack"),
                max_steps: int = 8, reset_every: int = 6) -> list[Chat]:
  """Chats of `num_episodes` scripted episodes (games in turn), deterministic for a seed.

  Half Crafter by default: MiniHack and NetHack share their action names, Crafter's are
  its own. An env is reset every `reset_every` episodes of its task (a reset costs ~0.3 s;
  the episodes between go on from where the previous one left the game, memory fresh).
  """
  from automem.envs import make_env

  r = random.Random(seed)
  envs: dict[str, list[Any]] = {}  # task -> [env, current observation, episodes since reset]
  out: list[Chat] = []
  try:
    with tempfile.TemporaryDirectory() as tmp:
      for i in range(num_episodes):
        game = games[i % len(games)]
        env_name, tasks = _ENVS[game]
        task = tasks[(i // len(games)) % len(tasks)]
        if task not in envs:
          envs[task] = [make_env(env_name, 1, **({"task": task} if game == "minihack" else {})),
                        None, 0]
        slot = envs[task]
        if slot[1] is None or slot[2] >= reset_every:
          slot[1], slot[2] = slot[0].reset([_SEED_BASE + 100_000 * seed + i])[0], 0
        episode = _Episode(r, game, task, slot[0], os.path.join(tmp, str(i)), slot[1])
        out += episode.play(r.randint(1, max_steps))
        slot[1] = None if episode.ended else episode.obs
        slot[2] += 1
  finally:
    for slot in envs.values():
      slot[0].close()
  return out
