"""Runs parsed memory commands against a store and says what happened.

Every command and every parse error gives exactly one `CommandResult`, in
order; a refused command (op not allowed in this phase, bad arguments, a
limit, an invalid name, a read-only file) changes nothing and says why. DONE
and ACTION are returned as control results for the agent to act on; they
never touch the store. No exception escapes `execute`.

Every text returned to the model is bounded: an argument echoed in a result
(a SEARCH or COUNT query, an ACTION name) is cut to `ECHO_CHARS`, LIST and
every read result fit `max_read_chars`, and the results of one completion
together fit `results_budget(limits)`; the commands past that budget still
run, but one note says how many results were left out and `format_results`
skips the rest (a completion full of unknown tags cannot grow the follow-up
prompt).
Text that cleans to nothing visible (only control, format or space characters) is refused.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

from absl import logging

from automem.memory.commands import (
    ALL_OPS,
    DEFAULT_PHASE_OPS,
    OPS,
    Command,
    ParseError,
    ParseResult,
)
from automem.memory.store import MemoryStore, StoreError, StoreLimits, clean_content, count_lines

# Characters of a model-written argument echoed back in a result.
ECHO_CHARS = 80
# The results of one completion fit in this many `max_read_chars` (see `results_budget`).
RESULTS_BUDGET_READS = 4


def results_budget(limits: StoreLimits) -> int:
  """Characters all results of one completion may take in the follow-up prompt."""
  return RESULTS_BUDGET_READS * limits.max_read_chars


def _echo(arg: str) -> str:
  """`repr` of a model-written argument, cut to `ECHO_CHARS` characters."""
  return repr(arg if len(arg) <= ECHO_CHARS else arg[:ECHO_CHARS] + "...")


@dataclasses.dataclass(frozen=True)
class CommandResult:
  """The outcome of one command (or parse error).

  Attributes:
    op: the op name ("" for an unrecognised fragment).
    args: the command's arguments.
    span: `(start, end)` of the command in the completion.
    ok: whether it ran; False for parse errors and refusals.
    text: the message for the agent.
    control: True for DONE and ACTION.
    changed: whether the store changed.
    meta: small JSON facts for analysis, e.g. `{"matches": 0}` for an empty SEARCH;
      `{"hidden": True}` (or `"note"` on the first) past the per-turn results budget.
      READ/SEARCH/TAIL/COUNT add `"returned": {file: [line numbers]}`, the
      1-based lines of each file they showed (COUNT: the lines it counted),
      which usage credit follows through the episode.
  """

  op: str
  args: tuple[str, ...]
  span: tuple[int, int]
  ok: bool
  text: str
  control: bool = False
  changed: bool = False
  meta: dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def is_action(self) -> bool:
    return self.ok and self.op == "ACTION"

  def to_record(self) -> dict[str, Any]:
    """The trajectory form: `{"op", "args", "span", "ok", "result"}` (+ `meta`)."""
    rec = {"op": self.op, "args": list(self.args), "span": list(self.span), "ok": self.ok,
           "result": self.text}
    if self.meta:
      rec["meta"] = dict(self.meta)
    return rec


def format_results(results: Iterable[CommandResult]) -> str:
  """The results of one turn as prompt text (the `{results}` placeholder).

  Results hidden by the per-completion budget are skipped; the note on the
  first of them says how many there were.
  """
  shown = [r.text for r in results if not r.meta.get("hidden") or r.meta.get("hidden") == "note"]
  return "\n\n".join(shown) or "(no commands found)"


def _bound(results: list[CommandResult], budget: int) -> list[CommandResult]:
  """`results` with the texts past `budget` characters replaced: the first by a note saying
  how many were left out, the rest by a short marker that `format_results` skips."""
  used = 0
  for i, r in enumerate(results):
    used += len(r.text) + 2
    if used > budget:
      hidden = len(results) - i
      note = (f"[{r.op or 'ERROR'}] {hidden} more result(s) of this turn not shown: the "
              f"results of one turn are limited to {budget} characters; send fewer commands")
      return [*results[:i], dataclasses.replace(r, text=note, meta={**r.meta, "hidden": "note"}),
              *(dataclasses.replace(x, text=f"[{x.op or 'ERROR'}] (result not shown)",
                                    meta={**x.meta, "hidden": True})
                for x in results[i + 1:])]
  return results


def _cleaned(text: str, what: str) -> str:
  """`text` as it would be stored; refuses text that cleans to nothing but was not empty."""
  out = clean_content(text)
  if text.strip() and not any(_visible(c) for c in out):
    raise _Refused(f"{what} has only control or invisible characters; nothing to store")
  return out


def _visible(ch: str) -> bool:
  """Whether a character shows as something (not space, control, format such as zero-width
  or bidi marks, or unassigned)."""
  return not ch.isspace() and unicodedata.category(ch) not in ("Cc", "Cf", "Cn", "Co", "Cs")


class _Refused(Exception):
  pass


def _int_arg(value: str, what: str) -> int:
  try:
    return int(value.strip().strip("[]() "))
  except ValueError:
    raise _Refused(f"{what} must be a whole number, got {value[:40]!r}") from None


def _matches(content: str, query: str) -> list[tuple[int, str]]:
  q = query.casefold()
  return [(i + 1, line) for i, line in enumerate(content.splitlines()) if q in line.casefold()]


def _fit(lines: list[str], budget: int, from_end: bool = False) -> tuple[list[str], bool]:
  """The most lines (from the start, or the end) that fit in `budget` characters."""
  out, used = [], 0
  seq = reversed(lines) if from_end else lines
  for line in seq:
    if used + len(line) + 1 > budget:
      return (out[::-1] if from_end else out), True
    out.append(line)
    used += len(line) + 1
  return (out[::-1] if from_end else out), False


class _Runner:

  def __init__(self, store: MemoryStore, map_file: str | None, upsert_separator: str):
    self.store = store
    self.lim = store.limits
    self.map_file = map_file
    self.sep = upsert_separator

  def run(self, op: str, args: tuple[str, ...]) -> tuple[str, bool, dict[str, Any]]:
    return getattr(self, f"op_{op.lower()}")(*args)

  # read-only ------------------------------------------------------------------------------

  def op_list(self):
    listing = self.store.index_text(max_chars=self.lim.max_read_chars)
    return f"[LIST] {len(self.store.names())} file(s):\n{listing}", False, {}

  def op_read(self, file, start="1"):
    name = self.store.resolve(file)
    lines = self.store.read_text(name).splitlines()
    first = _int_arg(start, "start_line")
    if not lines:
      return f"[READ {name}] (empty file)", False, {"lines": 0, "returned": {}}
    if not 1 <= first <= len(lines):
      raise _Refused(f"start_line must be in 1..{len(lines)} for {name}")
    page, more = _fit(lines[first - 1:], self.lim.max_read_chars)
    truncated = ""
    if not page:  # a single line longer than the whole budget
      page = [lines[first - 1][: self.lim.max_read_chars - 30] + " ...(line cut)"]
      truncated, more = " (line cut)", first < len(lines)
    last = first + len(page) - 1
    head = f"[READ {name}] lines {first}-{last} of {len(lines)}{truncated}"
    tail = ""
    if more and last < len(lines):
      tail = f"\n(continue with <|READ|>{name}|{last + 1}<|END|>)"
    return head + ":\n" + "\n".join(page) + tail, False, {
        "lines": len(page), "returned": {name: list(range(first, last + 1))}}

  def op_search(self, file, query):
    if not query:
      raise _Refused("SEARCH needs a non-empty query")
    if file.strip() == "*":
      found = [(n, i, f"{n}: {line}") for n in self.store.names()
               for i, line in _matches(self.store.read_text(n), query)]
      where = "all files"
    else:
      name = self.store.resolve(file)
      found = [(name, i, line) for i, line in _matches(self.store.read_text(name), query)]
      where = name
    hits = [h for _, _, h in found]
    total = len(hits)
    if not total:
      return (f"[SEARCH {where} for {_echo(query)}] no matching lines", False,
              {"matches": 0, "returned": {}})
    shown = hits[-self.lim.max_search_results:]
    shown, cut = _fit(shown, self.lim.max_read_chars, from_end=True)  # + a bounded header
    returned: dict[str, list[int]] = {}
    for n, i, _ in found[len(found) - len(shown):] if shown else []:
      returned.setdefault(n, []).append(i)
    note = f" (showing the last {len(shown)})" if len(shown) < total else ""
    head = f"[SEARCH {where} for {_echo(query)}] {total} matching line(s){note}:"
    if cut and not shown:
      head += " (lines too long to show; use READ)"
    return head + "\n" + "\n".join(shown), False, {"matches": total, "returned": returned}

  def op_tail(self, file, n="10"):
    name = self.store.resolve(file)
    k = _int_arg(n, "n")
    if k < 1:
      raise _Refused("n must be at least 1")
    note = ""
    if k > self.lim.max_tail_lines:
      k, note = self.lim.max_tail_lines, f" (n capped at max_tail_lines={self.lim.max_tail_lines})"
    lines = self.store.read_text(name).splitlines()
    if not lines:
      return f"[TAIL {name}] (empty file)", False, {"lines": 0, "returned": {}}
    shown, _ = _fit(lines[-k:], self.lim.max_read_chars, from_end=True)
    head = f"[TAIL {name}] last {len(shown)} of {len(lines)} lines{note}:"
    first = len(lines) - len(shown) + 1
    return head + "\n" + "\n".join(shown), False, {
        "lines": len(shown), "returned": {name: list(range(first, len(lines) + 1))}}

  def op_count(self, file, query=""):
    name = self.store.resolve(file)
    content = self.store.read_text(name)
    total = count_lines(content)
    if not query:
      return f"[COUNT {name}] {total} lines", False, {
          "matches": total, "returned": {name: list(range(1, total + 1))}}
    hits = [i for i, _ in _matches(content, query)]
    return f"[COUNT {name} for {_echo(query)}] {len(hits)} of {total} lines match", False, {
        "matches": len(hits), "returned": {name: hits}}

  # writes -----------------------------------------------------------------------------------

  def op_append(self, file, text):
    text = _cleaned(text, "the text").strip("\n")
    if not text.strip():
      raise _Refused("APPEND needs some text")
    content = self.store.read_text(file) if self.store.exists(file) else ""
    if content and not content.endswith("\n"):
      content += "\n"
    name = self.store.write(file, content + text + "\n")
    total = count_lines(self.store.read_text(name))
    return f"[APPEND {name}] added {count_lines(text)} line(s); now {total} lines", True, {}

  def op_write(self, file, text):
    text = _cleaned(text, "the text")
    content = text.strip("\n") + "\n" if text.strip() else ""
    existed = self.store.exists(file)
    name = self.store.write(file, content)
    verb = "replaced" if existed else "created"
    return f"[WRITE {name}] {verb}; now {count_lines(content)} lines", True, {}

  def op_create(self, file, description=None):
    name = self.store.write(file, "", create_only=True, description=description)
    return f"[CREATE {name}] created (empty)", True, {}

  def op_edit(self, file, old, new):
    name = self.store.resolve(file)
    content = self.store.read_text(name)
    if not old:
      raise _Refused("EDIT needs the exact text to replace")
    new = _cleaned(new, "the new text")
    n = content.count(old)
    if n == 0:
      raise _Refused(f"the text to replace was not found in {name}; READ or SEARCH it first")
    if n > 1:
      raise _Refused(f"the text to replace occurs {n} times in {name}; include more of it")
    self.store.write(name, content.replace(old, new, 1), must_exist=True)
    return f"[EDIT {name}] replaced 1 occurrence", True, {}

  def op_delete(self, file):
    name = self.store.delete(file)
    return f"[DELETE {name}] deleted", True, {}

  def op_rename(self, file, new_name):
    old, new = self.store.rename(file, new_name)
    return f"[RENAME {old}] now {new}", old != new, {}

  def op_upsert(self, file, key, value):
    key = " ".join(_cleaned(key, "the key").split())
    if not key:
      raise _Refused("UPSERT needs a key")
    value = " ".join(_cleaned(value, "the value").split())
    line = f"{key}{self.sep}{value}"
    prefix = (key + self.sep.rstrip()).casefold()
    content = self.store.read_text(file) if self.store.exists(file) else ""
    lines = content.splitlines()
    hit = [i for i, ln in enumerate(lines) if ln.casefold().startswith(prefix)]
    if hit:
      lines[hit[0]] = line
      for i in reversed(hit[1:]):  # older duplicates of the key go too
        del lines[i]
      verb = "updated"
    else:
      lines.append(line)
      verb = "added"
    name = self.store.write(file, "\n".join(lines) + "\n")
    return f"[UPSERT {name}] {verb} {key!r}", True, {}

  def op_upsert_map(self, key, value):
    if not self.map_file:
      raise _Refused("UPSERT_MAP has no map file in this structure; use UPSERT|file|key|value")
    return self.op_upsert(self.map_file, key, value)


def execute(
    store: MemoryStore,
    commands: ParseResult | Iterable[Command | ParseError],
    *,
    phase: str,
    structure: Any = None,
    allowed_ops: Sequence[str] | None = None,
    max_commands: int | None = None,
) -> list[CommandResult]:
  """Runs `commands` in order and returns one result per item.

  Args:
    store: the episode's memory store.
    commands: the output of `parse_commands` (or its items).
    phase: "log" or "plan"; selects the allowed ops of the structure.
    structure: a `MemoryStructure` giving the phase's allowed ops, its
      `max_commands_per_turn`, the UPSERT_MAP file and the UPSERT separator.
    allowed_ops: overrides the structure's list (`DEFAULT_PHASE_OPS[phase]`, or
      every op for an unknown phase, when neither is given).
    max_commands: overrides the structure's per-turn command cap.
  """
  phase = str(phase).lower()
  map_file, sep = None, ": "
  if structure is not None:
    spec = structure.phase(phase)
    allowed_ops = spec.allowed_ops if allowed_ops is None else allowed_ops
    max_commands = spec.max_commands_per_turn if max_commands is None else max_commands
    map_file, sep = structure.map_file, structure.upsert_separator
  if allowed_ops is None:
    allowed_ops = DEFAULT_PHASE_OPS.get(phase, ALL_OPS)
  allowed = set(allowed_ops)
  runner = _Runner(store, map_file, sep)
  results: list[CommandResult] = []
  n_run = 0
  for item in commands:
    if isinstance(item, ParseError):
      results.append(CommandResult(item.op, item.args, item.span, False, f"[ERROR] {item.message}"))
      continue
    op, args, span = item.op, item.args, item.span
    spec = OPS.get(op)
    if spec is None or op not in allowed:
      allowed_txt = ", ".join(o for o in ALL_OPS if o in allowed)
      results.append(CommandResult(op, args, span, False,
                                   f"[ERROR {op}] not allowed in the {phase.upper()} phase "
                                   f"(allowed: {allowed_txt})"))
      continue
    if spec.control:
      text = "[DONE] logging finished" if op == "DONE" else f"[ACTION] committed {_echo(args[0])}"
      results.append(CommandResult(op, args, span, True, text, control=True))
      continue
    n_run += 1
    if max_commands is not None and n_run > max_commands:
      results.append(CommandResult(op, args, span, False,
                                   f"[ERROR {op}] limit max_commands_per_turn ({max_commands}) "
                                   "reached; this command was not run"))
      continue
    try:
      with store.locked():  # one command is atomic for threads sharing the store
        text, changed, meta = runner.run(op, args)
      results.append(CommandResult(op, args, span, True, text, changed=changed, meta=meta))
    except (StoreError, _Refused) as e:
      meta = {"limit": e.limit} if isinstance(e, StoreError) and e.limit else {}
      results.append(CommandResult(op, args, span, False, f"[ERROR {op}] {e}", meta=meta))
    except Exception as e:
      logging.exception("memory command %s failed", op)
      results.append(CommandResult(op, args, span, False,
                                   f"[ERROR {op}] internal error: {type(e).__name__}"))
  return _bound(results, results_budget(store.limits))
