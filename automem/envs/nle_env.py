"""One NetHack or MiniHack game as a single-slot text env (runs inside a worker).

`NLESlotEnv` wraps one NLE gymnasium env (any NetHack or MiniHack task id) and
speaks the slot protocol of `automem.envs.slots`: `reset(seed)`, `step(name)`.
It renders text observations (`nle_text`), maps readable action names to
keystrokes (`nle_actions`), steps through --More-- prompts, and keeps the
episode's metrics and caps.

Step semantics: every call to `step` counts one step towards the caps. An
invalid action name sends no keystroke (the game does not advance) and comes
back with `valid_action=False` and a feedback line; it still counts as a step
(it cost the agent a turn) and towards the no-progress timeout. A name may
carry answers to the prompts it opens ("wield -", "zap f north", "engrave -
Elbereth"): they are sent while the game asks for them, all within the one
step; one it did not ask for is not sent, and the feedback says so.

Seeds: NetHack's core and disp RNGs are both set from the episode seed with
reseeding off, the moon phase is derived from the seed (`fix_moon_phase`), and
Python's `random` (which picks Boxoban levels) is seeded too, so a seed fully
determines an episode. (In nle 1.3, gymnasium's `reset(seed=...)` seeds only
`np_random`, not NetHack, and `NetHackChallenge.seed()` raises; the seeds are
set through NLE's `Nethack.set_initial_seeds` instead, as `NLE.seed` does.)
"""

from __future__ import annotations

import dataclasses
import random
import sys
import warnings
from typing import Any

import numpy as np

from automem.envs.base import EpisodeStats, Observation, StepResult
from automem.envs.nle_actions import ActionVocab, ParsedAction
from automem.envs.nle_progress import ProgressTracker
from automem.envs.nle_text import BL_DEPTH, BL_TIME, OBS_KEYS, more_text, prompt_kind, render

# NLE's StepStatus values (nle.env.base.NLE.StepStatus, tasks add TASK_SUCCESSFUL).
_ABORTED, _DEATH, _TASK_SUCCESSFUL = -1, 1, 2
_ENTER = ord("\r")
_MAX_MORE = 64  # --More-- prompts stepped through per action, at most
_POSITION_DONE = frozenset(map(ord, ".,;:")) | {27}  # keys that end a map-position prompt
SUCCESS_RULES = ("balrog", "goal")


def _seed_pair(seed: int) -> tuple[int, int]:
  """Core and disp RNG seeds for NetHack from one episode seed."""
  core, disp = np.random.SeedSequence(int(seed)).generate_state(2, dtype=np.uint64)
  return int(core) & 0x7FFFFFFFFFFFFFFF, int(disp) & 0x7FFFFFFFFFFFFFFF


class NLESlotEnv:
  """A single NetHack/MiniHack game with text observations and readable actions.

  Args:
    game: "nethack" or "minihack" (decides progression and stats labels).
    task: a gymnasium id, e.g. "NetHackChallenge-v0" or "MiniHack-Corridor-R3-v0".
    max_steps: episode cap in agent steps (end reason "step_cap").
    no_progress_steps: end the episode ("no_progress") after this many
      consecutive steps in which the in-game turn counter did not move;
      None disables it.
    nearby_limit: most entities listed in the "nearby" section.
    success_rule: MiniHack progression: "balrog" (100 when the last step's reward is
      at least 1.0, BALROG's rule) or "goal" (100 when the task reports success, even
      at reward 0.99 when the winning move took no game time). NetHack ignores it.
    env_kwargs: extra keyword arguments for `gymnasium.make(task, ...)`.
  """

  def __init__(
      self,
      game: str,
      task: str,
      *,
      max_steps: int,
      no_progress_steps: int | None = None,
      nearby_limit: int = 20,
      success_rule: str = "goal",
      env_kwargs: dict[str, Any] | None = None,
  ):
    import gymnasium as gym
    import nle  # noqa: F401 -- registers NetHack tasks

    if game == "minihack":
      with warnings.catch_warnings():  # minihack 1.0.2 imports the deprecated pkg_resources
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        import minihack  # noqa: F401 -- registers MiniHack tasks
    if success_rule not in SUCCESS_RULES:
      raise ValueError(f"success_rule must be one of {SUCCESS_RULES}, got {success_rule!r}")
    self.game, self.task = game, task
    self.success_rule = success_rule
    self.max_steps = int(max_steps)
    self.no_progress_steps = no_progress_steps
    self.nearby_limit = nearby_limit
    kwargs = dict(env_kwargs or {})
    kwargs.setdefault("observation_keys", OBS_KEYS)
    # Our caps rule; NLE's own ones are pushed out of the way.
    kwargs["max_episode_steps"] = sys.maxsize
    if task.startswith("NetHackChallenge"):
      kwargs.setdefault("no_progress_timeout", sys.maxsize)
    kwargs.setdefault("fix_moon_phase", True)
    self._env = gym.make(task, disable_env_checker=True, **kwargs).unwrapped
    nh = self._env.nethack
    # NetHackChallenge blocks seeding by shadowing these methods on the instance;
    # removing the shadows restores NLE's own seeding methods.
    for name in ("set_initial_seeds", "set_current_seeds", "get_current_seeds"):
      nh.__dict__.pop(name, None)
    actions = [int(a) for a in self._env.actions]
    self._index = {key: i for i, key in reversed(list(enumerate(actions)))}
    self.vocab = ActionVocab(actions)
    self._stats: EpisodeStats | None = None
    self._done = True

  @property
  def action_names(self) -> tuple[str, ...]:
    return self.vocab.names

  @property
  def action_reader(self) -> ActionVocab:
    """Reads action texts as `step` would (aliases, arguments, 16-point directions)."""
    return self.vocab

  @property
  def action_descriptions(self) -> dict[str, str]:
    return dict(self.vocab.descriptions)

  @property
  def stats(self) -> EpisodeStats | None:
    return self._stats

  def reset(self, seed: int) -> Observation:
    core, disp = _seed_pair(seed)
    random.seed(int(seed))
    self._env.nethack.set_initial_seeds(core, disp, False, None)
    obs, _ = self._env.reset()
    self._reward = 0.0
    self._progress = ProgressTracker()
    self._turn = None
    self._stalled = 0
    self._done = False
    self._stats = EpisodeStats(game=self.game, task=self.task, seed=int(seed))
    obs, _, _, _, messages = self._skip_more(obs, 0.0, False, {})
    self._observe(obs)
    self._last = self._make_obs(obs, messages)
    return self._last

  def step(self, action: str) -> StepResult:
    if self._stats is None:
      raise RuntimeError("step() before reset()")
    if self._done:
      return StepResult(self._last, 0.0, True, False, "The episode has ended; reset to play again.", self._stats)
    parsed = self.vocab.parse(action)
    reward, done, end = 0.0, False, "running"
    if isinstance(parsed, str):
      feedback, valid = parsed, False
      self._stalled += 1
    else:
      valid = True
      obs, reward, done, info, messages, feedback = self._send(parsed)
      how = None
      if done:
        status = int(info.get("end_status", _DEATH))
        how = self._how_done()
        end = "goal" if status == _TASK_SUCCESSFUL or how == "ascended" else "step_cap" if status == _ABORTED else "death"
      self._observe(obs)
      self._last = self._make_obs(obs, messages)
      if how is not None:  # how the game ended: "died", "starving", "escaped", "quit", ...
        self._last.info["how_done"] = how
    length = self._stats.length + 1
    if not done and length >= self.max_steps:
      done, end = True, "step_cap"
    elif not done and self.no_progress_steps is not None and self._stalled >= self.no_progress_steps:
      done, end = True, "no_progress"
    self._done = done
    if self.game == "nethack":
      progression = self._progress.progression
    elif self.success_rule == "balrog":  # BALROG: a win is a last reward of at least 1.0
      progression = 100.0 if valid and reward >= 1.0 else 0.0
    else:
      progression = 100.0 if end == "goal" else 0.0
    self._stats = dataclasses.replace(
        self._stats,
        episode_return=self._stats.episode_return + reward,
        length=length,
        achievements=tuple(self._progress.reached),
        progression=progression,
        end_reason=end,
    )
    return StepResult(self._last, reward, done, valid, feedback, self._stats)

  def close(self) -> None:
    if self._env is not None:
      self._env.close()
      self._env = None

  # -- internals --------------------------------------------------------------

  def _press(self, key: int):
    """Sends one keystroke and steps through the --More-- prompts it brings."""
    obs, reward, term, trunc, info = self._env.step(self._index[key])
    return self._skip_more(obs, float(reward), term or trunc, info)

  def _send(self, parsed: ParsedAction):
    """Sends a command key, then its arguments while the game keeps asking for them.

    An argument goes only to a prompt that can take it: a key to a yes/no, item or
    direction question, an open menu or a map-position cursor; text (then Enter) to
    a text prompt. The first one the game did not ask for, and those after it, are
    not sent, and the feedback says so: never a keystroke the game would read as a
    new command.
    """
    obs, reward, done, info, messages = self._press(parsed.key)
    notes = list(parsed.notes)
    position = False  # a map-position cursor (travel, jump, ...) stays until . , ; : or esc
    for i, arg in enumerate(parsed.arguments):
      asked = None if done else prompt_kind(obs, position)
      if asked is None or (arg.typed and asked != "text"):
        rest = " ".join(a.text for a in parsed.arguments[i:])
        why = (
            "the episode ended" if done else "the game did not ask for anything more"
            if asked is None else "the game asks for a key here, not a line of text"
        )
        notes.append(f"{rest!r} was not sent after {parsed.name!r}: {why}.")
        break
      keys = arg.keys if arg.typed or asked != "text" else (*arg.keys, ord("\r"))
      for key in keys:
        obs, r, done, info, more = self._press(key)
        reward += r
        messages += more
        if done:
          break
      position = asked == "position" and keys[-1] not in _POSITION_DONE
    return obs, reward, done, info, messages, " ".join(notes)

  def _skip_more(self, obs, reward, done, info):
    """Presses Enter at --More-- prompts, collecting their text."""
    messages: list[str] = []
    for _ in range(_MAX_MORE):
      if done or _ENTER not in self._index:
        break
      text = more_text(obs["tty_chars"])
      if text is None:
        break
      messages.append(text)
      obs, r, term, trunc, info = self._env.step(self._index[_ENTER])
      reward += float(r)
      done = term or trunc
    return obs, reward, done, info, messages

  def _how_done(self) -> str | None:
    """NetHack's own name for how the game ended, when it has ended."""
    try:
      how = self._env.nethack.how_done()
    except Exception:  # informative only
      return None
    return getattr(how, "name", str(how)).lower()

  def _observe(self, obs) -> None:
    """Updates milestones and the no-progress counter from a new observation."""
    bl = obs["blstats"]
    if int(bl[BL_DEPTH]) == 0:  # blstats are zero once the game is over
      return
    self._progress.update(bl)
    turn = int(bl[BL_TIME])
    if turn == self._turn:
      self._stalled += 1
    else:
      self._turn, self._stalled = turn, 0

  def _make_obs(self, obs, messages) -> Observation:
    text, info = render(obs, messages, self.nearby_limit)
    info["task"] = self.task
    info["more_prompts"] = len(messages)
    return Observation(text=text, info=info)
