"""The batched text-environment protocol shared by every game.

A `TextEnv` owns `num_envs` slots. `reset(seeds)` starts a fresh episode in
each slot (or in chosen slots), `step(actions)` advances every slot whose
action is not `None` by one game step. Actions are the game's text action
names; an unknown name is a no-op with a feedback line, never an exception.
`check_action(text)` says, without a step, whether and as what `step` reads a text.
Every `StepResult` carries the episode's running `EpisodeStats`, final once
`done` is true. A slot that is done stays done until it is reset.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

# Why an episode ended. "running" while it has not.
END_REASONS = ("running", "death", "goal", "step_cap", "no_progress", "error")


@dataclasses.dataclass(frozen=True)
class Observation:
  """What the agent sees of one slot after a reset or a step.

  Attributes:
    text: the full text observation, ready to put into a prompt.
    info: game-specific structured extras (position, vitals, ...) for
      helper observers and tests; JSON-serialisable.
  """

  text: str
  info: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class EpisodeStats:
  """Per-episode metrics, running while the episode lasts, final at its end.

  Attributes:
    game: "crafter", "minihack" or "nethack".
    task: the concrete task id (e.g. "MiniHack-Corridor-R3-v0").
    seed: the seed given to `reset`; it fully determines the episode.
    episode_return: sum of rewards so far.
    length: env steps taken (invalid actions count: they cost a step).
    achievements: names of achievements/milestones reached, in order.
    progression: BALROG-style progression in [0, 100].
    end_reason: one of `END_REASONS`.
    error: what went wrong when `end_reason == "error"`.
  """

  game: str
  task: str
  seed: int
  episode_return: float = 0.0
  length: int = 0
  achievements: tuple[str, ...] = ()
  progression: float = 0.0
  end_reason: str = "running"
  error: str | None = None

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class StepResult:
  """The outcome of one step of one slot.

  Attributes:
    observation: the observation after the step.
    reward: the reward of this step.
    done: whether the episode has ended (see `stats.end_reason`).
    valid_action: False when the action text was not understood (a no-op
      was taken instead).
    feedback: a line for the agent about the action itself ("" when all is
      well), e.g. why an action name was rejected.
    stats: the episode's metrics after this step.
  """

  observation: Observation
  reward: float
  done: bool
  valid_action: bool
  feedback: str
  stats: EpisodeStats


@dataclasses.dataclass(frozen=True)
class ActionCheck:
  """How an env would read an action text, found without playing it.

  Attributes:
    action: the text to pass to `step` (the model's own text where it carries more than
      a name: arguments, an alias, a 16-point direction), or None when it is refused.
    name: the offered action name the text stands for (what action checks and records
      compare), or None when no name was recognised. Set on a refused text whose name
      was fine but whose arguments were not.
    feedback: why a text is refused, or how an accepted one was read when not
      literally ("" when all is plain).
  """

  action: str | None
  name: str | None
  feedback: str = ""


@runtime_checkable
class ActionReader(Protocol):
  """Reads action texts for one game: cheap, picklable and free of side effects.

  Attributes:
    hints: offered name -> a short note shown next to it in the action list (e.g.
      "also: more" for an accepted alias); empty when there is nothing to add.
  """

  hints: Mapping[str, str]

  def check(self, text: str) -> ActionCheck: ...


class NameReader:
  """The plain reader: a text is accepted when it normalises to an offered name
  (`normalize_action_name`), and then the offered name is sent."""

  hints: Mapping[str, str] = {}

  def __init__(self, names: Sequence[str]):
    self._names = {normalize_action_name(n): n for n in names}

  def check(self, text: str) -> ActionCheck:
    name = self._names.get(normalize_action_name(text)) if isinstance(text, str) else None
    return ActionCheck(name, name, "" if name else f"{text!r} is not one of the action names")


class TextEnv(abc.ABC):
  """A batch of `num_envs` text-game slots behind one batched interface."""

  game: str = ""

  @property
  @abc.abstractmethod
  def num_envs(self) -> int:
    """Number of slots."""

  @property
  @abc.abstractmethod
  def action_names(self) -> tuple[str, ...]:
    """The action names offered to the agent; `action_reader` may accept more (aliases,
    arguments) and says so in its `hints`."""

  @property
  def action_reader(self) -> ActionReader:
    """How this env reads action texts (`check_action`); by default, `NameReader`."""
    return NameReader(self.action_names)

  def check_action(self, text: str) -> ActionCheck:
    """Whether `step` would accept `text`, and as what; plays nothing."""
    return self.action_reader.check(text)

  @abc.abstractmethod
  def reset(
      self, seeds: Sequence[int], indices: Sequence[int] | None = None
  ) -> list[Observation]:
    """Starts new episodes.

    Args:
      seeds: one seed per reset slot; the seed fully determines the episode.
      indices: the slots to reset (default: all, then `len(seeds)` must be
        `num_envs`).

    Returns:
      The first observation of each reset slot, in the order of `indices`.
    """

  @abc.abstractmethod
  def step(self, actions: Sequence[str | None]) -> list[StepResult | None]:
    """Advances every slot whose action is not None by one step.

    Args:
      actions: `num_envs` entries; a text action name, or None to leave the
        slot untouched this step.

    Returns:
      One entry per slot: its `StepResult`, or None where the action was None.
    """

  def close(self) -> None:  # noqa: B027 -- optional hook, a no-op by default
    """Releases resources (worker processes, devices). Idempotent."""

  def __enter__(self) -> TextEnv:
    return self

  def __exit__(self, *exc: object) -> None:
    self.close()


def check_batch(actions: Sequence[Any], num_envs: int) -> None:
  """Raises a clear error when a batch has the wrong size."""
  if isinstance(actions, str | bytes):
    raise TypeError(f"actions must be a sequence of {num_envs} action names, not one string")
  if len(actions) != num_envs:
    raise ValueError(f"expected {num_envs} actions (one per slot, None to skip), got {len(actions)}")


def normalize_action_name(text: str) -> str:
  """Canonical form for matching action names: lower case, single spaces."""
  return " ".join(text.replace("_", " ").replace("-", " ").split()).lower()
