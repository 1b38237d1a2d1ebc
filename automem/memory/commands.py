"""The memory command language: op table, tolerant parser, canonical renderer.

A completion is free text with commands embedded in it:

  <|SEARCH|>dungeon_map.txt|stairs<|END|>
  <|APPEND|>actions_log.txt|Step 12 'east': bumped into a wall<|END|>
  <|DONE|>

The parser accepts what real models emit besides the canonical form: code
fences around commands, prose between them, lower-case op names, `<OP>`,
`<|OP>` and `<OP|>` without one or both bars, `</OP>` or `<END>` as the end
marker, and a missing end marker (the body then runs to the next command or
the end of the text; for ops other than APPEND, WRITE and EDIT only to the
end of its line). Each command and each unparseable fragment carries the
character span `(start, end)` of its text in the completion, so `text[start:end]`
is exactly the command, markers included (Loop 2 builds its loss mask from it).
Prose without command markers stays silent; a marker the parser could not use
(`<|READ notes.txt`, `<||>x<|END|>`, a stray `<|END|>`, `READ|notes.txt` at the
start of a line) is an error saying `expected <|OP|>arg|...<|END|>`.

Arguments are split on `|`; the last argument takes the rest of the body, so
free text (a note, a map row with `|` walls) may contain bars, but only the
last argument may.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any


@dataclasses.dataclass(frozen=True)
class OpSpec:
  """One operation of the language.

  Attributes:
    name: upper-case op name.
    params: parameter names in order; a trailing `?` marks an optional one.
    writes: whether the op may change the store.
    control: DONE and ACTION: interpreted by the agent, never by the store.
    summary: one line for command references in prompts.
  """

  name: str
  params: tuple[str, ...]
  writes: bool
  control: bool
  summary: str

  @property
  def min_args(self) -> int:
    return sum(not p.endswith("?") for p in self.params)

  @property
  def max_args(self) -> int:
    return len(self.params)

  @property
  def usage(self) -> str:
    """The command as it is written, e.g. `<|TAIL|>file|n<|END|>`."""
    if not self.params:
      return f"<|{self.name}|>"
    body = "|".join(p.rstrip("?") if not p.endswith("?") else f"[{p[:-1]}]" for p in self.params)
    return f"<|{self.name}|>{body}<|END|>"


_OPS = (
    OpSpec("LIST", (), False, False, "List the memory files with sizes and descriptions."),
    OpSpec("READ", ("file", "start_line?"), False, False,
           "Read a file (paged: a long file says where to continue)."),
    OpSpec("SEARCH", ("file", "query"), False, False,
           "Lines of a file containing the query (case-insensitive); file * searches all."),
    OpSpec("TAIL", ("file", "n?"), False, False, "The last n lines of a file (default 10)."),
    OpSpec("COUNT", ("file", "query?"), False, False,
           "How many lines of a file contain the query (all lines without one)."),
    OpSpec("APPEND", ("file", "text"), True, False,
           "Add text as new line(s) at the end of a file."),
    OpSpec("WRITE", ("file", "text"), True, False, "Replace the whole content of a file."),
    OpSpec("CREATE", ("file", "description?"), True, False,
           "Create a new empty file, optionally with a one-line description."),
    OpSpec("EDIT", ("file", "old", "new"), True, False,
           "Replace the one exact occurrence of old with new."),
    OpSpec("DELETE", ("file",), True, False, "Delete a file."),
    OpSpec("RENAME", ("file", "new_name"), True, False, "Rename a file."),
    OpSpec("UPSERT", ("file", "key", "value"), True, False,
           "Set the line for key to 'key: value' (replaced if present, else added)."),
    OpSpec("UPSERT_MAP", ("key", "value"), True, False,
           "UPSERT into the structure's map file (e.g. key 12,4)."),
    OpSpec("DONE", (), False, True, "End the LOG phase."),
    OpSpec("ACTION", ("name",), False, True, "Commit one game action and end the PLAN phase."),
)

OPS: dict[str, OpSpec] = {op.name: op for op in _OPS}
ALL_OPS: tuple[str, ...] = tuple(OPS)
READ_ONLY_OPS: tuple[str, ...] = tuple(o.name for o in _OPS if not o.writes and not o.control)
WRITE_OPS: tuple[str, ...] = tuple(o.name for o in _OPS if o.writes)
CONTROL_OPS: tuple[str, ...] = ("DONE", "ACTION")
# Ops whose last argument may span lines even without an end marker.
MULTILINE_OPS: tuple[str, ...] = ("APPEND", "WRITE", "EDIT")
# Vocabulary per phase when no structure says otherwise: LOG may do anything but act,
# PLAN only reads and acts.
DEFAULT_PHASE_OPS: dict[str, tuple[str, ...]] = {
    "log": tuple(o for o in ALL_OPS if o != "ACTION"),
    "plan": (*READ_ONLY_OPS, "ACTION"),
}


@dataclasses.dataclass(frozen=True)
class Command:
  """One parsed command.

  Attributes:
    op: canonical upper-case op name (a key of `OPS`).
    args: the arguments, whitespace-stripped.
    span: `(start, end)` character offsets of the whole command, markers
      included, in the parsed text.
    closed: False when the end marker was missing (tolerated).
  """

  op: str
  args: tuple[str, ...]
  span: tuple[int, int]
  closed: bool = True

  @property
  def is_control(self) -> bool:
    return self.op in CONTROL_OPS

  @property
  def is_action(self) -> bool:
    return self.op == "ACTION"

  @property
  def writes(self) -> bool:
    return OPS[self.op].writes

  def render(self) -> str:
    return render_command(self.op, *self.args)

  def to_dict(self) -> dict[str, Any]:
    return {"op": self.op, "args": list(self.args), "span": list(self.span)}


@dataclasses.dataclass(frozen=True)
class ParseError:
  """A fragment that looks like a command but could not be parsed.

  Attributes:
    message: what was wrong and what was expected; shown to the agent.
    span: `(start, end)` of the fragment in the parsed text.
    op: the op name when it was recognised (wrong arguments), else the raw
      name or "".
    args: the raw arguments when the op was recognised.
  """

  message: str
  span: tuple[int, int]
  op: str = ""
  args: tuple[str, ...] = ()

  is_control = False
  is_action = False

  def to_dict(self) -> dict[str, Any]:
    return {"op": self.op, "args": list(self.args), "span": list(self.span), "error": self.message}


@dataclasses.dataclass(frozen=True)
class ParseResult:
  """Everything found in one completion, in text order."""

  items: tuple[Command | ParseError, ...]

  @property
  def commands(self) -> tuple[Command, ...]:
    return tuple(i for i in self.items if isinstance(i, Command))

  @property
  def errors(self) -> tuple[ParseError, ...]:
    return tuple(i for i in self.items if isinstance(i, ParseError))

  @property
  def action(self) -> str | None:
    """The first committed action name, or None."""
    for c in self.commands:
      if c.op == "ACTION":
        return c.args[0]
    return None

  @property
  def done(self) -> bool:
    return any(c.op == "DONE" for c in self.commands)

  def spans(self, kind: str = "memory") -> list[tuple[int, int]]:
    """Character spans for loss masks, in text order.

    Args:
      kind: "memory" (memory commands and DONE: what the memory specialist
        writes), "action" (ACTION commands), "errors" (unparseable fragments)
        or "all".
    """
    if kind not in ("memory", "action", "errors", "all"):
      raise ValueError(f"unknown span kind {kind!r}")
    out = []
    for item in self.items:
      is_err = isinstance(item, ParseError)
      if (kind == "all" or (kind == "errors" and is_err)
          or (kind == "action" and not is_err and item.is_action)
          or (kind == "memory" and not is_err and not item.is_action)):
        out.append(item.span)
    return out

  def __iter__(self) -> Iterator[Command | ParseError]:
    return iter(self.items)

  def __len__(self) -> int:
    return len(self.items)


# A tag: `<|OP|>`, `<OP>`, `<|op>`, `</OP>`, `<| OP |>`, `<|END}` ... Bars optional, at most
# one space between parts (bounded quantifiers keep matching linear on hostile text).
_TAG = re.compile(r"< ?(/)? ?(\|)? ?([A-Za-z][A-Za-z_]{0,23}) ?(\|)? ?([>}])")
_END_NAMES = ("END",)
_QUOTES = "\"'`"


@dataclasses.dataclass(frozen=True)
class _Tag:
  kind: str  # "open" | "end" | "unknown"
  name: str
  start: int
  end: int


def _scan(text: str) -> list[_Tag]:
  tags = []
  for m in _TAG.finditer(text):
    slash, bar1, name, bar2, closer = m.groups()
    upper = name.upper()
    if upper in _END_NAMES:
      tags.append(_Tag("end", upper, m.start(), m.end()))
    elif upper in OPS:
      if closer == "}":
        continue
      tags.append(_Tag("end" if slash else "open", upper, m.start(), m.end()))
    elif bar1 and bar2 and not slash and closer == ">":
      # Only the barred form counts as an attempted unknown command; `<b>` is prose.
      tags.append(_Tag("unknown", name, m.start(), m.end()))
  return tags


def _clean_arg(arg: str, *, is_name: bool) -> str:
  arg = arg.strip()
  if is_name and len(arg) >= 2 and arg[0] == arg[-1] and arg[0] in _QUOTES:
    arg = arg[1:-1].strip()
  return arg


def _split_args(op: OpSpec, body: str) -> tuple[str, ...]:
  if op.max_args == 0:
    return ()
  parts = body.split("|", op.max_args - 1)
  out = []
  for i, (part, param) in enumerate(zip(parts, op.params)):
    is_text = param.rstrip("?") in ("text", "new", "old", "value", "description")
    out.append(_clean_arg(part, is_name=not is_text or i == 0))
  # An empty trailing optional argument is the same as an absent one.
  while len(out) > op.min_args and not out[-1]:
    out.pop()
  return tuple(out)


def _arity_error(op: OpSpec, args: tuple[str, ...]) -> str | None:
  if len(args) < op.min_args:
    return f"{op.name} expects {op.usage}, got {len(args)} argument(s)"
  for param, arg in zip(op.params, args):
    if not arg and param.rstrip("?") not in ("text", "new", "value", "description"):
      return f"{op.name}: argument '{param.rstrip('?')}' is empty; expected {op.usage}"
  return None


def parse_commands(text: str) -> ParseResult:
  """Parses every command and every broken command fragment in `text`.

  Never raises on any string input, and runs in time linear in its length.
  Prose and code fences are ignored; an unknown `<|NAME|>` tag, a command with
  missing or empty arguments, an unterminated argument list, and any command
  marker left outside the parsed commands (`<|READ notes.txt`, `<||>`, a stray
  `<|END|>`, `|>`, a line starting `READ|notes.txt`) yield a `ParseError` that
  says what was expected.
  """
  if not isinstance(text, str):
    return ParseResult((ParseError("expected text", (0, 0)),))
  tags = _scan(text)
  items: list[Command | ParseError] = []
  i = 0
  while i < len(tags):
    tag = tags[i]
    if tag.kind == "end":
      i += 1
      continue
    # The body runs to the next end marker; a following command tag (or the
    # end of the text) closes it too.
    j = i + 1
    nxt = tags[j] if j < len(tags) else None
    if tag.kind == "unknown":
      end = nxt.end if nxt is not None and nxt.kind == "end" else tag.end
      items.append(ParseError(
          f"unknown command {tag.name!r}; expected one of {', '.join(ALL_OPS)}",
          (tag.start, end), op=tag.name))
      i = j + 1 if nxt is not None and nxt.kind == "end" else i + 1
      continue
    op = OPS[tag.name]
    if op.max_args == 0:
      # DONE / LIST take no body; swallow an end marker right after the tag.
      end = tag.end
      if nxt is not None and nxt.kind == "end" and not text[tag.end:nxt.start].strip():
        end = nxt.end
        j += 1
      else:
        j = i + 1
      items.append(Command(op.name, (), (tag.start, end)))
      i = j
      continue
    if nxt is not None and nxt.kind == "end":
      body, end, closed, i_next = text[tag.end:nxt.start], nxt.end, True, j + 1
    else:
      stop = nxt.start if nxt is not None else len(text)
      body = text[tag.end:stop]
      if op.name not in MULTILINE_OPS:
        # Unterminated one-line commands end at their line: prose often follows.
        lead = len(body) - len(body.lstrip())
        cut = body.find("\n", lead)
        if cut >= 0:
          body = body[:cut]
      body = body.rstrip()
      if body.endswith("```"):  # a closing code fence is not part of the command
        body = body[:-3].rstrip()
      end, closed, i_next = tag.end + len(body), False, j
    args = _split_args(op, body)
    err = _arity_error(op, args)
    if err is None and not closed and not body.strip():
      err = f"{op.name} has no arguments and no end marker; expected {op.usage}"
    if err is not None:
      items.append(ParseError(err, (tag.start, end), op=op.name, args=args))
    else:
      items.append(Command(op.name, args, (tag.start, end), closed))
    i = i_next
  return ParseResult(tuple(_with_leftovers(text, items)))


# Command markers the tag parser could not use: `<|` with whatever name-like text follows
# (`<|READ notes.txt`, `<||>`, `<|END|>`), `<NAME|>`, `NAME|>`, and a line starting with a
# known op name directly followed by `|` (`READ|notes.txt`), which runs to the end of its
# line. Bounded quantifiers keep the scan linear on hostile text.
_OP_WORDS = "|".join(sorted(ALL_OPS, key=len, reverse=True))
_LEFTOVER = re.compile(
    rf"(?P<opline>^[ \t]{{0,8}}(?P<op>{_OP_WORDS})\|[^\n]*)"
    r"|<\|[^<>|\n]{0,32}(?:\|>|[|>])?"
    r"|<[^<>|\n]{0,32}\|>"
    r"|[A-Za-z_]{0,24}\|>",
    re.IGNORECASE | re.MULTILINE)
_EXPECTED = "expected <|OP|>arg|...<|END|>"
# Leftover fragments reported per text at most (hostile text could hold thousands).
_MAX_LEFTOVERS = 16


def _leftover_error(text: str, start: int, end: int, op: str) -> ParseError:
  frag = text[start:end]
  shown = repr(frag if len(frag) <= 60 else frag[:57] + "...")
  core = frag.strip("<>|/ \t").upper()
  if op:
    spec = OPS[op.upper()]
    return ParseError(f"{shown} has no command markers; {_EXPECTED} (here {spec.usage})",
                      (start, end), op=spec.name)
  if core in _END_NAMES:
    return ParseError(f"stray end marker {shown} with no command before it; {_EXPECTED}",
                      (start, end))
  m = re.match(r"<?\|?/? ?([A-Za-z_]*) ?(\|>)?", frag)
  name = m.group(1).upper()
  if not name:
    why = "no op name"
  elif name not in OPS:
    why = f"unknown op {name!r}"
  elif not m.group(2):
    why = f"the op name {name} is not closed by '|>'"
  else:
    why = "broken markers"
  known = name in OPS and frag.lstrip("<|").upper().startswith(name)
  return ParseError(f"malformed command {shown} ({why}); {_EXPECTED}", (start, end),
                    op=name if known else "")


def _with_leftovers(text: str, items: list[Command | ParseError]) -> list[Command | ParseError]:
  """`items` plus a `ParseError` for each stray command marker outside their spans.

  Neighbouring leftovers merge into one fragment: markers separated only by spaces, and an
  opening fragment with the stray end marker later on its line (`<||>x<|END|>`).
  """
  frags: list[list[Any]] = []  # [start, end, op, is_end]
  bounds = [0, *(b for item in items for b in item.span), len(text)]
  for a, b in zip(bounds[::2], bounds[1::2]):
    for m in _LEFTOVER.finditer(text, a, b):
      start, end, op = m.start(), m.end(), m.group("op") or ""
      if op:
        start = m.start("op")
      end = start + len(text[start:end].rstrip())
      if end <= start:
        continue
      is_end = not op and text[start:end].strip("<>|/ \t").upper() in _END_NAMES
      prev = frags[-1] if frags else None
      if prev is not None and not prev[2] and not prev[3] and not op and prev[1] >= a:
        gap = text[prev[1]:start]
        if not gap.strip(" \t") or (is_end and "\n" not in gap):
          prev[1], prev[3] = end, is_end
          continue
      frags.append([start, end, op, is_end])
  if not frags:
    return items
  if len(frags) > _MAX_LEFTOVERS:
    frags = frags[:_MAX_LEFTOVERS]
  errors = [_leftover_error(text, s, e, op) for s, e, op, _ in frags]
  merged: list[Command | ParseError] = []
  k = 0
  for item in items:
    while k < len(errors) and errors[k].span[0] < item.span[0]:
      merged.append(errors[k])
      k += 1
    merged.append(item)
  merged.extend(errors[k:])
  return merged


def render_command(op: str, *args: str) -> str:
  """The canonical text of a command; `parse_commands` reads it back exactly.

  Raises:
    ValueError: unknown op, wrong number of arguments, or an argument that
      cannot round-trip (a `|` outside the last argument, a tag inside one).
  """
  spec = OPS.get(op.upper())
  if spec is None:
    raise ValueError(f"unknown op {op!r}")
  if not spec.min_args <= len(args) <= spec.max_args:
    raise ValueError(
        f"{spec.name} takes {spec.min_args}..{spec.max_args} arguments, got {len(args)}")
  for k, a in enumerate(args):
    if "|" in a and k < len(args) - 1:
      raise ValueError(f"{spec.name}: only the last argument may contain '|': {a!r}")
    if _TAG.search(a):
      raise ValueError(f"{spec.name}: argument contains a command tag: {a!r}")
  if spec.max_args == 0:
    return f"<|{spec.name}|>"
  return f"<|{spec.name}|>{'|'.join(args)}<|END|>"


def command_reference(ops: tuple[str, ...] | list[str]) -> str:
  """A command list for prompts: one `usage  summary` line per op."""
  specs = [OPS[o] for o in ops]
  width = max((len(s.usage) for s in specs), default=0)
  return "\n".join(f"  {s.usage.ljust(width)}  {s.summary}" for s in specs)
