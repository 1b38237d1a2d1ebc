"""Errors that entry points report as one line, and the wrapper that does it.

An `InputError` is bad input a user can fix (a config field, a file, the
workdir): the entry point prints `error: <field or file>: <message>` and
exits with status 2, with no traceback and no config dump. A `RunStopped`
run ended early for an outside reason (an LLM server that stayed down):
one line, exit status 3; a rerun resumes. Anything else is a bug and keeps
its traceback. `parse_flags` does the same for a bad flag or config variant
(absl's own parser exits 1 with the config file's traceback in its message).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

EXIT_INPUT_ERROR = 2
EXIT_RUN_STOPPED = 3


class InputError(ValueError):
  """Bad input, named by the config field or file it came from.

  Attributes:
    where: the field (`config.game.minihack.tasks`) or file.
  """

  def __init__(self, where: str, message: str):
    super().__init__(f"{where}: {message}")
    self.where = where


class RunStopped(RuntimeError):
  """The run stopped early for an outside reason (a server down); a rerun resumes it."""


def parse_flags(argv: list[str]) -> list[str]:
  """`app.run(main, flags_parser=parse_flags)`: a bad flag or config variant is one line, exit 2.

  absl's own parser prints the config file's traceback inside its message and exits 1.
  """
  from absl import flags

  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    where = lines[0].split(": ", 1)[0] if len(lines) > 1 else ""
    text = f"{where}: {lines[-1]}" if where else (lines[-1] if lines else type(e).__name__)
    print(f"error: {text}", file=sys.stderr, flush=True)
    sys.exit(EXIT_INPUT_ERROR)


def reports_errors(main: Callable[..., Any]) -> Callable[..., Any]:
  """Wraps an absl `main`: `InputError` -> one line + exit 2, `RunStopped` -> one line + exit 3."""

  @functools.wraps(main)
  def wrapper(*args: Any, **kwargs: Any) -> Any:
    try:
      return main(*args, **kwargs)
    except InputError as e:
      print(f"error: {e}", file=sys.stderr, flush=True)
      sys.exit(EXIT_INPUT_ERROR)
    except RunStopped as e:
      print(f"stopped: {e}", file=sys.stderr, flush=True)
      sys.exit(EXIT_RUN_STOPPED)

  return wrapper
