"""The parts of a MemoryStructure, as frozen dataclasses.

Every field carries its documentation and an example in its metadata
(`doc`, `example`); the reviewer's field reference (`spec_reference`) is
generated from these, so it cannot drift from what is validated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from automem.memory.structure_fields import PHASES

HOOK_POINTS = ("step_start", "after_log")
PIN_VIEWS = ("whole", "head", "tail", "match")


def meta(doc: str, example: Any) -> dict[str, Any]:
  """Field metadata: what the field means and an example value (for `spec_reference`)."""
  return {"doc": doc, "example": example}


def spec_field(doc: str, example: Any, default: Any = dataclasses.MISSING,
               factory: Any = dataclasses.MISSING) -> Any:
  """A dataclass field with the documentation the field reference prints."""
  if factory is not dataclasses.MISSING:
    return dataclasses.field(default_factory=factory, metadata=meta(doc, example))
  if default is dataclasses.MISSING:
    return dataclasses.field(metadata=meta(doc, example))
  return dataclasses.field(default=default, metadata=meta(doc, example))


@dataclasses.dataclass(frozen=True)
class FileSpec:
  """One initial memory file, with its retention rule."""

  name: str = spec_field("file name (letters, digits, ._-/)", "goals.txt")
  description: str = spec_field("one line shown in the file index", "current goals", "")
  content: str = spec_field("initial content", "1. collect wood\n", "")
  schema: str = spec_field("the line format entries should follow (free text)",
                           "Step N 'action': outcome", "")
  persist: bool = spec_field("keep its content across the episodes of a run", False, False)
  read_only: bool = spec_field("the agent may read it but not change it", False, False)
  keep_last: int = spec_field(
      "retention: keep at most this many lines, the last ones (0 = no limit); applied at "
      "hooks.retention", 40, 0)
  keep_header: int = spec_field(
      "retention: lines at the top always kept besides keep_last (a fixed header)", 1, 0)


@dataclasses.dataclass(frozen=True)
class PhaseSpec:
  """Templates, vocabulary and limits of one phase (LOG or PLAN)."""

  system: str = spec_field("fixed instructions; static placeholders only",
                           "You play {game}.\n{game_rules}\n{actions}\n{commands}")
  user: str = spec_field(
      "first message of the phase at a step; {file_index} before {history} before {pinned} "
      "before the per-step placeholders (prefix caching)",
      "{file_index}\n{history}\n{pinned}\n{helpers}\n{observation}")
  follow_up: str = spec_field("message after each further turn; needs {results}",
                              "RESULTS\n{results}")
  allowed_ops: tuple[str, ...] = spec_field("the commands the phase may run",
                                            ["SEARCH", "READ", "ACTION"])
  max_iterations: int = spec_field("LLM turns per step before the phase is cut off", 3, 5)
  max_commands_per_turn: int = spec_field("memory commands run per completion", 8, 8)


@dataclasses.dataclass(frozen=True)
class ObserverSpec:
  """A helper observer the agent computes; its text goes into {helpers}."""

  name: str = spec_field("an observer of the library (see the observer list)", "threat")
  phases: tuple[str, ...] = spec_field("phases whose {helpers} get its text", ["plan"], PHASES)
  params: Mapping[str, Any] = spec_field("parameters (others take their defaults)",
                                         {"radius": 4}, factory=dict)

  def param(self, key: str) -> Any:
    """A parameter value, or its default."""
    from automem.memory.observers import OBSERVERS

    if key in self.params:
      return self.params[key]
    return OBSERVERS[self.name].params[key].default


@dataclasses.dataclass(frozen=True)
class PinSpec:
  """A file's content shown in a phase's prompt at {pinned}."""

  file: str = spec_field("the pinned file (one of `files`)", "goals.txt")
  phases: tuple[str, ...] = spec_field("phases that show it (their user template needs "
                                       "{pinned})", ["plan"], ("plan",))
  view: str = spec_field(f"what is shown: one of {', '.join(PIN_VIEWS)}", "tail", "whole")
  lines: int = spec_field("lines shown by head/tail/match", 10, 20)
  pattern: str = spec_field("case-insensitive text a line must contain (view match)",
                            "goal", "")


@dataclasses.dataclass(frozen=True)
class HarnessFileSpec:
  """A read-only file the harness rewrites from an observer at hooks.harness."""

  file: str = spec_field("the file (one of `files`, declared read_only)", "status.txt")
  source: str = spec_field("the observer whose text becomes the content", "status_block")
  params: Mapping[str, Any] = spec_field("the observer's parameters", {}, factory=dict)

  @property
  def name(self) -> str:  # ObserverSpec-like, for `run_observer`
    return self.source

  def param(self, key: str) -> Any:
    from automem.memory.observers import OBSERVERS

    if key in self.params:
      return self.params[key]
    return OBSERVERS[self.source].params[key].default


@dataclasses.dataclass(frozen=True)
class SizeWarning:
  """A soft warning in the prompt when a memory file grows past a size."""

  max_lines: int = spec_field("warn above this many lines (0 = off)", 60, 0)
  max_bytes: int = spec_field("warn above this many bytes (0 = off)", 4000, 0)
  exempt: tuple[str, ...] = spec_field("files never warned about", ["knowledge.txt"], ())
  phases: tuple[str, ...] = spec_field("phases whose {helpers} carry the warning", ["log"],
                                       ("log",))


@dataclasses.dataclass(frozen=True)
class ActionCheckSpec:
  """A check on the committed action that may reject it and re-prompt PLAN."""

  kind: str = spec_field("a check of the library (see the check list)", "noop_streak")
  params: Mapping[str, Any] = spec_field("the check's parameters", {"max_in_row": 2},
                                         factory=dict)

  def param(self, key: str) -> Any:
    from automem.memory.action_checks import ACTION_CHECKS

    if key in self.params:
      return self.params[key]
    return ACTION_CHECKS[self.kind].params[key].default


@dataclasses.dataclass(frozen=True)
class TaskOverride:
  """Changes (a revision's dotted paths) applied for tasks whose id matches a glob."""

  match: str = spec_field("task-id glob (fnmatch)", "MiniHack-Boxoban-*")
  changes: Mapping[str, Any] = spec_field("dotted path -> value, as in a revision",
                                          {"fallback_action": "north"})


@dataclasses.dataclass(frozen=True)
class ModeSpec:
  """An alternative user template / op set of a phase while an observer fires."""

  name: str = spec_field("mode name (recorded in the trajectory)", "direction")
  when: str = spec_field("the observer whose non-empty text turns the mode on",
                         "prompt_active")
  params: Mapping[str, Any] = spec_field("that observer's parameters",
                                         {"kinds": ["direction"]}, factory=dict)
  phases: tuple[str, ...] = spec_field("phases the mode changes", ["plan"], ("plan",))
  user: str = spec_field("user template used instead of the phase's (\"\" = keep)",
                         "{file_index}\n{history}\nAnswer the game's question.\n{observation}",
                         "")
  allowed_ops: tuple[str, ...] = spec_field("ops used instead of the phase's ([] = keep)",
                                            ["ACTION"], ())
  checks: bool = spec_field("run the action checks while the mode is on (an answer to a "
                           "question is not a move)", False, False)

  def param(self, key: str) -> Any:
    from automem.memory.observers import OBSERVERS

    if key in self.params:
      return self.params[key]
    return OBSERVERS[self.when].params[key].default


@dataclasses.dataclass(frozen=True)
class HookSpec:
  """When the harness steps run within an env step."""

  harness: str = spec_field(f"when harness files are rewritten: {' | '.join(HOOK_POINTS)}",
                            "step_start", "step_start")
  retention: str = spec_field(f"when keep_last is applied: {' | '.join(HOOK_POINTS)}",
                              "after_log", "after_log")
