"""Parser and renderer of the memory command language."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from automem.memory import (
    ALL_OPS,
    OPS,
    Command,
    ParseError,
    command_reference,
    parse_commands,
    render_command,
)


def _span_text(text, item):
  return text[item.span[0]:item.span[1]]


def test_canonical_commands_parse_with_exact_spans():
  text = ("I will look first.\n<|SEARCH|>map.txt|stairs<|END|>\nthen note it "
          "<|APPEND|>log.txt|Step 3 'east': wall<|END|><|DONE|>")
  res = parse_commands(text)
  assert [c.op for c in res.commands] == ["SEARCH", "APPEND", "DONE"]
  assert res.commands[0].args == ("map.txt", "stairs")
  assert _span_text(text, res.commands[0]) == "<|SEARCH|>map.txt|stairs<|END|>"
  assert _span_text(text, res.commands[1]) == "<|APPEND|>log.txt|Step 3 'east': wall<|END|>"
  assert _span_text(text, res.commands[2]) == "<|DONE|>"
  assert res.done and res.action is None and not res.errors


def test_action_is_distinguishable_and_first_one_wins():
  text = ("<|SEARCH|>a.txt|x<|END|> ok <|ACTION|>Move North<|END|> <|ACTION|>noop<|END|>"
          " <|BAD|><|END|>")
  res = parse_commands(text)
  assert res.action == "Move North"
  assert [c.is_action for c in res.commands] == [False, True, True]
  assert not res.done
  assert [text[s:e] for s, e in res.spans("memory")] == ["<|SEARCH|>a.txt|x<|END|>"]
  assert [text[s:e] for s, e in res.spans("action")] == [
      "<|ACTION|>Move North<|END|>", "<|ACTION|>noop<|END|>"]
  assert [text[s:e] for s, e in res.spans("errors")] == ["<|BAD|><|END|>"]
  assert len(res.spans("all")) == 4


@pytest.mark.parametrize("text, op, args", [
    ("```\n<|READ|>notes.txt<|END|>\n```", "READ", ("notes.txt",)),
    ("<|search|>notes.txt|Stairs<|end|>", "SEARCH", ("notes.txt", "Stairs")),
    ("<SEARCH>notes.txt|x<END>", "SEARCH", ("notes.txt", "x")),
    ("<|TAIL>notes.txt|5<END|>", "TAIL", ("notes.txt", "5")),
    ("<ACTION>east</ACTION>", "ACTION", ("east",)),
    ("<|ACTION|>far east<|END}", "ACTION", ("far east",)),
    ("<| APPEND |>log.txt|a | b | c<|END|>", "APPEND", ("log.txt", "a | b | c")),
    ("<|WRITE|>`plan.txt`|line one\nline two<|END|>", "WRITE", ("plan.txt", "line one\nline two")),
    ("<|EDIT|>a.txt|old text|new text<|END|>", "EDIT", ("a.txt", "old text", "new text")),
    ("<|UPSERT_MAP|>12,4|floor, door east<|END|>", "UPSERT_MAP", ("12,4", "floor, door east")),
    ("<|LIST|><|END|>", "LIST", ()),
    ("<|DONE|>", "DONE", ()),
])
def test_tolerated_forms(text, op, args):
  res = parse_commands(text)
  assert not res.errors, res.errors
  (cmd,) = res.commands
  assert (cmd.op, cmd.args) == (op, args)
  assert _span_text(text, cmd).lstrip().startswith("<")


def test_unterminated_one_line_commands_stop_at_their_line():
  text = "<|ACTION|>Move North\nbecause the tree is there.\n<|APPEND|>a.txt|x\ny"
  res = parse_commands(text)
  assert [(c.op, c.args) for c in res.commands] == [
      ("ACTION", ("Move North",)), ("APPEND", ("a.txt", "x\ny"))]
  assert _span_text(text, res.commands[0]) == "<|ACTION|>Move North"


def test_missing_end_at_end_of_completion_and_before_next_command():
  text = "<|SEARCH|>a.txt|key\n<|ACTION|>Move West\n```"
  res = parse_commands(text)
  assert [(c.op, c.args, c.closed) for c in res.commands] == [
      ("SEARCH", ("a.txt", "key"), False), ("ACTION", ("Move West",), False)]
  assert _span_text(text, res.commands[0]) == "<|SEARCH|>a.txt|key"
  assert _span_text(text, res.commands[1]) == "<|ACTION|>Move West"


@pytest.mark.parametrize("text, fragment, expect", [
    ("x <|FROB|>a|b<|END|> y", "<|FROB|>a|b<|END|>", "unknown command"),
    ("<|SEARCH|>notes.txt<|END|>", "<|SEARCH|>notes.txt<|END|>", "SEARCH expects"),
    ("<|EDIT|>a.txt|only old<|END|>", "<|EDIT|>a.txt|only old<|END|>", "EDIT expects"),
    ("<|ACTION|><|END|>", "<|ACTION|><|END|>", "expected <|ACTION|>name"),
    ("<|READ|>|3<|END|>", "<|READ|>|3<|END|>", "is empty"),
])
def test_errors_say_what_was_expected(text, fragment, expect):
  res = parse_commands(text)
  assert not res.commands
  (err,) = res.errors
  assert isinstance(err, ParseError)
  assert expect in err.message
  assert _span_text(text, err) == fragment


def test_prose_without_command_markers_is_silent():
  text = ("I think <b>bold</b> and a < b > c, then </DONE>. Read | write | search\n"
          "Search the map, then READ it: done | ok\n- read|write are ops")
  assert len(parse_commands(text)) == 0


@pytest.mark.parametrize("text, fragment, expect", [
    ("<|READ notes.txt", "<|READ notes.txt", "READ is not closed by '|>'"),
    ("<||>x<|END|>", "<||>x<|END|>", "no op name"),
    ("I am done. <|END|> bye", "<|END|>", "stray end marker '<|END|>'"),
    ("READ|notes.txt", "READ|notes.txt", "'READ|notes.txt' has no command markers"),
    ("ok:\n  SEARCH|map.txt|stairs<|END|>  \nthen", "SEARCH|map.txt|stairs<|END|>",
     "(here <|SEARCH|>file|query<|END|>)"),
    ("<|FROB>x", "<|FROB>", "unknown op 'FROB'"),
    ("x <|<|<|  <| y", "<|<|<|  <| y", "no op name"),
    ("x <|READ  \n", "<|READ", "READ is not closed"),
    ("so tail|> 5", "tail|>", "malformed command 'tail|>'"),
])
def test_leftover_markers_are_errors_that_say_what_was_expected(text, fragment, expect):
  res = parse_commands(text)
  assert not res.commands
  (err,) = res.errors
  assert _span_text(text, err) == fragment
  assert expect in err.message, err.message
  assert "expected <|OP|>arg|...<|END|>" in err.message


def test_leftovers_interleave_with_commands_in_text_order():
  text = ("<|READ|>a.txt<|END|> <|END|>\nTAIL|a.txt|3\n<|DONE|> <|SEARCH a.txt|x<|END|>"
          " <|END|><|END|>")
  res = parse_commands(text)
  got = [(type(i).__name__, _span_text(text, i)) for i in res.items]
  assert got == [
      ("Command", "<|READ|>a.txt<|END|>"), ("ParseError", "<|END|>"),
      ("ParseError", "TAIL|a.txt|3"), ("Command", "<|DONE|>"),
      ("ParseError", "<|SEARCH a.txt|x<|END|>"), ("ParseError", "<|END|>"),
      ("ParseError", "<|END|>")]
  assert res.errors[1].op == "TAIL" and res.errors[2].op == "SEARCH"


def test_leftover_errors_are_capped_on_hostile_text():
  text = "x|> " * 5_000
  errors = parse_commands(text).errors
  assert 1 <= len(errors) <= 16


def test_items_are_in_text_order_with_errors_interleaved():
  text = "<|READ|>a.txt<|END|><|NOPE|>x<|END|><|DONE|>"
  res = parse_commands(text)
  kinds = [type(i).__name__ for i in res.items]
  assert kinds == ["Command", "ParseError", "Command"]
  starts = [i.span[0] for i in res.items]
  assert starts == sorted(starts)


def test_render_rejects_what_cannot_round_trip():
  with pytest.raises(ValueError, match="unknown op"):
    render_command("FLY", "x")
  with pytest.raises(ValueError, match="only the last"):
    render_command("EDIT", "a.txt", "x|y", "z")
  with pytest.raises(ValueError, match="takes"):
    render_command("SEARCH", "a.txt")
  assert render_command("done") == "<|DONE|>"


def test_command_reference_lists_usage():
  ref = command_reference(["SEARCH", "TAIL", "DONE"])
  assert "<|SEARCH|>file|query<|END|>" in ref
  assert "<|TAIL|>file|[n]<|END|>" in ref
  assert ref.count("\n") == 2


_word = st.text(st.characters(codec="utf-8", exclude_characters="|<>\n\r'\"`"), min_size=1,
                max_size=12).map(str.strip).filter(bool)
_free = st.text(st.characters(codec="utf-8", exclude_characters="<>"), max_size=40).map(str.strip)


@st.composite
def _command(draw):
  op = OPS[draw(st.sampled_from(ALL_OPS))]
  n = draw(st.integers(op.min_args, op.max_args))
  args = [draw(_word) for _ in range(n)]
  last = op.params[n - 1] if n else "?"
  if last in ("text", "value", "new"):
    args[-1] = draw(_free) or args[-1]
  return op.name, tuple(args)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_command(), st.sampled_from(["", " ", "\nok, then: ", "```\n"])),
                max_size=6))
def test_render_parse_round_trip(cmds):
  text, expected = "", []
  for (op, args), sep in cmds:
    start = len(text)
    text += render_command(op, *args)
    expected.append((op, args, (start, len(text))))
    text += sep
  got = [(c.op, c.args, c.span) for c in parse_commands(text).items if isinstance(c, Command)]
  assert got == expected
  assert not parse_commands(text).errors


@pytest.mark.timeout(30)
@pytest.mark.parametrize("text", [
    "<" + " " * 20_000, "<|" * 10_000, "<|ACTION|>" + " " * 20_000 + "x",
    "<|WRITE|>a.txt|" + "\n" * 20_000 + "```", "< / | " * 5_000, "<|SEARCH|>" * 5_000,
])
def test_pathological_inputs_parse_in_linear_time(text):
  # Guards against regex backtracking blow-ups (a 400-space run took ~1 s before).
  res = parse_commands(text)
  assert all(0 <= i.span[0] < i.span[1] <= len(text) for i in res.items)


_hostile_text = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(["<|", "|>", "<", ">", "|", "END", "SEARCH", "ACTION", "DONE",
                              "/", "```", "\n", "a.txt", "x", "<|END|>", "<|ACTION|>", "}"]),
             max_size=40).map("".join),
)


@settings(max_examples=400, deadline=None)
@given(_hostile_text)
def test_parser_never_raises_and_spans_are_sane(text):
  res = parse_commands(text)
  last = 0
  for item in res.items:
    s, e = item.span
    assert 0 <= s < e <= len(text)
    assert s >= last
    last = e
    assert not text[s].isspace() and not text[e - 1].isspace()
    if isinstance(item, Command):
      assert text[s] == "<"
      assert item.op in OPS
      assert OPS[item.op].min_args <= len(item.args) <= OPS[item.op].max_args
