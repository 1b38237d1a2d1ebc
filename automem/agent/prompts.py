"""Prompt assembly laid out for prefix caching.

The structure's templates (`MemoryStructure`: per phase a static `system`,
a `user` message with {file_index} {history} before the per-step
placeholders, and a `follow_up` with {results}) are assembled into one chat
per env step, in the order a prefix cache rewards:

1. system: the fixed text of both phases (static placeholders only), the
   same for every request of the episode;
2. the step's LOG user message: {file_index} (names and descriptions, no
   sizes, so it changes only when a file is created, deleted or renamed),
   then {history} (one line per past step, append-only inside a window that
   moves in blocks of half its length), then the per-step values and the
   newest observation last;
3. the turns of the step, appended: completion, follow-up with the command
   results, ..., the PLAN user message (the observation is not repeated: it
   is already above), its turns.

So within a step each request repeats the previous one entirely, and the
first request of a step repeats the previous step's up to the end of the
history lines.

`layout="paper"` rebuilds the layout of the paper's agent for comparison:
the system prompt holds the current observation and the file index (with
sizes), so it changes at every step and every write. "paper" puts them after
the fixed instructions (the kinder case for a prefix cache), "paper_first"
before them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from automem.memory import TEXTS
from automem.memory.structure import history_window_start

LAYOUTS = ("cached", "paper", "paper_first")
# The default texts (a structure's `texts` may change every one of them).
DEFAULT_TEXTS = {k: v for k, (v, _) in TEXTS.items()}
SEE_ABOVE = DEFAULT_TEXTS["see_above"]
SEE_SYSTEM = DEFAULT_TEXTS["see_system"]


@dataclasses.dataclass(frozen=True)
class HistoryEntry:
  """One finished env step as a history line."""

  step: int
  action: str
  outcome: str

  def line(self, template: str = DEFAULT_TEXTS["history_line"]) -> str:
    return template.format(step=self.step, action=self.action, outcome=self.outcome)


def history_text(entries: Sequence[HistoryEntry], history_length: int,
                 texts: Mapping[str, str] = DEFAULT_TEXTS) -> str:
  window = entries[history_window_start(len(entries), history_length):]
  if not window:
    return texts["no_history"]
  return "\n".join(e.line(texts["history_line"]) for e in window)


def file_index_text(store: Any, *, sizes: bool, texts: Mapping[str, str] = DEFAULT_TEXTS) -> str:
  """The memory file index; without sizes it is stable while files only grow."""
  if sizes:
    return store.index_text()
  rows = []
  for f in store.index():
    ro = texts["read_only"] if store.is_read_only(f.name) else ""
    rows.append(f"- {f.name}{ro}: {f.description}" if f.description else f"- {f.name}{ro}")
  return "\n".join(rows) if rows else texts["no_files"]


def system_text(structure: Any, actions: Sequence[str], task: str) -> str:
  """The fixed instructions of both phases in one system message
  (`MemoryStructure.system_text`)."""
  return structure.system_text(actions, task)


def build_messages(
    *,
    layout: str,
    system: str,
    turns: Sequence[dict[str, str]],
    observation: str,
    file_index: str,
    texts: Mapping[str, str] = DEFAULT_TEXTS,
) -> list[dict[str, str]]:
  """The chat messages of one request: system, then the step's turns.

  Args:
    layout: "cached" (ours), "paper" or "paper_first".
    system: the fixed system text.
    turns: the step's messages so far (user first, user last).
    observation: the newest observation (put into the system prompt by
      the paper layouts).
    file_index: the file index with sizes (used by the paper layouts).
    texts: the structure's texts (`paper_dynamic` frames the paper layouts' part).
  """
  if layout not in LAYOUTS:
    raise ValueError(f"unknown prompt layout {layout!r}; known: {', '.join(LAYOUTS)}")
  dynamic = texts["paper_dynamic"].format(file_index=file_index, observation=observation)
  if layout == "paper":
    system = f"{system}\n\n{dynamic}"
  elif layout == "paper_first":
    system = f"{dynamic}\n\n{system}"
  return [{"role": "system", "content": system}, *(dict(t) for t in turns)]


def shared_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
  """Length of the longest common prefix of two token sequences."""
  n = min(len(a), len(b))
  i = 0
  while i < n and a[i] == b[i]:
    i += 1
  return i
