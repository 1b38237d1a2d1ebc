"""Usage credit from the logs: how the lines a turn wrote were used later.

No LLM calls. The episode's memory is followed through the recorded diffs,
the turns' and the harness's (`Trajectory.memory_changes`: retention,
harness files), so line numbers stay in step, keeping for every line of
every file the write that put it there. Reads (READ/SEARCH/TAIL record
`meta.returned`, the file lines they showed) are mapped back to those
writes; COUNT records the lines it counted but shows only a number, so it
retrieves nothing (`shown_lines`). For each written line:
retrieved later, retrieved before a commit (by a PLAN turn, i.e. while an
action was being chosen), overwritten or deleted unread, a duplicate of a
line already in memory. For each read: empty, redundant (only lines an
earlier read of the same step already showed), followed by an action change
(the step's action differs from the previous step's).

A turn's score is the mean over its written lines and reads of:
line: +1 retrieved before a commit, +0.5 retrieved only otherwise,
-0.5 overwritten unread, -0.5 duplicate (0 when never read but kept);
read: -0.5 empty, -0.25 redundant, +0.25 showed something, +0.25 more when
the action then changed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from automem.agent.trajectory import Trajectory, Turn
from automem.credit.scored import ScoredTurn, TurnKey
from automem.memory import READ_ONLY_OPS, WRITE_OPS


@dataclasses.dataclass
class LineUse:
  """One written line and what became of it."""

  turn: TurnKey
  command: int | None
  file: str
  text: str
  step: int
  duplicate: bool = False
  retrieved: int = 0
  retrieved_before_commit: bool = False
  removed_unread: bool = False

  @property
  def score(self) -> float:
    s = 1.0 if self.retrieved_before_commit else 0.5 if self.retrieved else 0.0
    return s - 0.5 * self.removed_unread - 0.5 * self.duplicate


@dataclasses.dataclass
class ReadUse:
  """One read command and what it showed."""

  turn: TurnKey
  command: int
  step: int
  lines: int
  empty: bool
  redundant: bool
  action_changed: bool

  @property
  def score(self) -> float:
    if self.empty:
      return -0.5
    if self.redundant:
      return -0.25
    return 0.25 + 0.25 * self.action_changed


@dataclasses.dataclass
class EpisodeUsage:
  lines: list[LineUse]
  reads: list[ReadUse]

  def summary(self) -> dict[str, Any]:
    n = max(len(self.lines), 1)
    r = max(len(self.reads), 1)
    return {
        "lines_written": len(self.lines),
        "retrieved": sum(u.retrieved > 0 for u in self.lines) / n,
        "retrieved_before_commit": sum(u.retrieved_before_commit for u in self.lines) / n,
        "removed_unread": sum(u.removed_unread for u in self.lines) / n,
        "duplicate": sum(u.duplicate for u in self.lines) / n,
        "reads": len(self.reads),
        "empty_reads": sum(u.empty for u in self.reads) / r,
        "redundant_reads": sum(u.redundant for u in self.reads) / r,
        "reads_before_action_change": sum(u.action_changed for u in self.reads) / r,
    }


NO_TEXT_OPS = frozenset({"COUNT"})  # reads whose result shows no line text


def shown_lines(c: dict) -> dict[str, list[int]] | None:
  """File -> line numbers a recorded command's result showed the model (None: not a read,
  a read past the turn's results budget, or one that shows no line text, e.g. COUNT)."""
  meta = c.get("meta") or {}
  returned = meta.get("returned")
  if returned is None or meta.get("hidden") or str(c.get("op")) in NO_TEXT_OPS:
    return None
  return returned


def _writer_of(turn: Turn, file: str, text: str) -> int | None:
  """The write command of `turn` that most likely wrote `text` into `file`."""
  best = None
  for i, c in enumerate(turn.commands):
    if c.get("ok") and str(c.get("op")) in WRITE_OPS:
      args = [str(a) for a in c.get("args", [])]
      if args and (args[0] == file or str(c.get("op")) == "UPSERT_MAP"):
        best = i
        if text and any(text in a or a in text for a in args[1:] if a):
          return i
  if best is None:
    writes = [i for i, c in enumerate(turn.commands)
              if c.get("ok") and str(c.get("op")) in WRITE_OPS]
    best = writes[-1] if writes else None
  return best


def episode_usage(traj: Trajectory) -> EpisodeUsage:
  """Follows every written line of one episode (see the module docstring)."""
  files: dict[str, list[LineUse | None]] = {}
  texts: dict[str, list[str]] = {}
  if traj.header.initial_memory:
    for name, content in traj.header.initial_memory.items():
      texts[name] = content.splitlines()
      files[name] = [None] * len(texts[name])
  lines: list[LineUse] = []
  reads: list[ReadUse] = []
  actions = {s.step: s.action for s in traj.steps}
  shown_this_step: dict[int, set[int]] = {}

  def read(turn: Turn, i: int, c: dict) -> None:
    returned = shown_lines(c)
    if returned is None:
      return  # not a read, not shown (past the turn's results budget), or no line text
    seen = shown_this_step.setdefault(turn.step, set())
    ids = []
    for name, numbers in returned.items():
      prov = files.get(name, [])
      for n in numbers:
        if 1 <= int(n) <= len(prov):
          ids.append(prov[int(n) - 1])
    count = sum(len(v) for v in returned.values())
    owned = [u for u in ids if u is not None]
    redundant = bool(owned) and all(id(u) in seen for u in owned)
    for u in owned:
      if u.turn != (traj.path, *turn.key):
        u.retrieved += 1
        if turn.phase == "plan":
          u.retrieved_before_commit = True
      seen.add(id(u))
    changed = (turn.step in actions and turn.step - 1 in actions
               and actions[turn.step] != actions[turn.step - 1])
    reads.append(ReadUse((traj.path, *turn.key), i, turn.step, count, count == 0, redundant,
                         changed))

  for _, turn, diff in traj.memory_changes():
    if turn is None:  # the harness's changes (retention, harness files): no one wrote these
      _apply(traj.path, None, diff, files, texts, lines)
      continue
    cmds = turn.commands
    first_write = next((i for i, c in enumerate(cmds)
                        if c.get("ok") and str(c.get("op")) in WRITE_OPS), len(cmds))
    for i in range(first_write):
      if str(cmds[i].get("op")) in READ_ONLY_OPS and cmds[i].get("ok"):
        read(turn, i, cmds[i])
    _apply(traj.path, turn, diff, files, texts, lines)
    for i in range(first_write, len(cmds)):
      if str(cmds[i].get("op")) in READ_ONLY_OPS and cmds[i].get("ok"):
        read(turn, i, cmds[i])
  return EpisodeUsage(lines, reads)


def _apply(path: str, turn: Turn | None, diff: dict[str, Any],
           files: dict[str, list[LineUse | None]], texts: dict[str, list[str]],
           lines: list[LineUse]) -> None:
  """Moves the line provenance through one recorded diff (`Trajectory.memory_changes`): a
  turn's (its new lines are its writes) or the harness's (turn None: new lines belong to no
  turn; lines it trims unread count as removed unread)."""
  existing = {x.strip() for v in texts.values() for x in v if x.strip()}

  def new(name: str, text: str) -> LineUse | None:
    if turn is None:
      existing.add(text.strip())
      return None
    u = LineUse((path, *turn.key), _writer_of(turn, name, text), name, text, turn.step,
                duplicate=bool(text.strip()) and text.strip() in existing)
    lines.append(u)
    existing.add(text.strip())
    return u

  def drop(old: Sequence[LineUse | None]) -> None:
    for u in old:
      if u is not None and not u.retrieved:
        u.removed_unread = True

  for name in diff.get("removed", {}):
    drop(files.pop(name, []))
    texts.pop(name, None)
  for name, content in diff.get("added", {}).items():
    texts[name] = content.splitlines()
    files[name] = [new(name, x) for x in texts[name]]
  for name, change in diff.get("changed", {}).items():
    prov, txt = files.get(name, []), texts.get(name, [])
    out_p: list[LineUse | None] = []
    out_t: list[str] = []
    pos = 0
    for _tag, i1, i2, added in change.get("ops", []):
      out_p.extend(prov[pos:i1])
      out_t.extend(txt[pos:i1])
      drop(prov[i1:i2])
      for x in added:
        x = x.rstrip("\n")
        out_t.append(x)
        out_p.append(new(name, x))
      pos = i2
    out_p.extend(prov[pos:])
    out_t.extend(txt[pos:])
    files[name], texts[name] = out_p, out_t


def usage_scores(candidates: Sequence[ScoredTurn], trajectories: Sequence[Trajectory]
                 ) -> list[ScoredTurn]:
  """Scores each candidate turn by the use of its written lines and reads."""
  lines: dict[TurnKey, list[LineUse]] = {}
  reads: dict[TurnKey, list[ReadUse]] = {}
  for traj in trajectories:
    u = episode_usage(traj)
    for line in u.lines:
      lines.setdefault(line.turn, []).append(line)
    for r in u.reads:
      reads.setdefault(r.turn, []).append(r)
  out = []
  for c in candidates:
    ls, rs = lines.get(c.key, []), reads.get(c.key, [])
    if not ls and not rs:
      continue
    score = sum([x.score for x in ls] + [r.score for r in rs]) / (len(ls) + len(rs))
    reason = (f"{len(ls)} line(s) written: {sum(x.retrieved > 0 for x in ls)} retrieved "
              f"({sum(x.retrieved_before_commit for x in ls)} before a commit), "
              f"{sum(x.removed_unread for x in ls)} overwritten unread, "
              f"{sum(x.duplicate for x in ls)} duplicate; {len(rs)} read(s): "
              f"{sum(r.empty for r in rs)} empty, {sum(r.redundant for r in rs)} redundant, "
              f"{sum(r.action_changed and not r.empty for r in rs)} before an action change")
    out.append(c.rescored("usage", score, reason))
  return out
