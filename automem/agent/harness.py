"""What the harness does to memory and prompts besides the model's turns.

- pinned views: the {pinned} text of a phase (`pinned_text`);
- harness-maintained files: read-only files rewritten from an observer
  (`update_harness_files`);
- retention: `keep_last` / `keep_header` trims (`apply_retention`);
- size warnings: soft notes in {helpers} (`size_warnings`);
- modes: which mode is on for a phase (`active_mode`).

Each function reads the `MemoryStructure`; writes go through the store's
`harness=True` path (read-only files stay read-only to the agent).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from automem.memory.observers import StepView, run_observer
from automem.memory.store import StoreError


def _view(content: str, pin: Any) -> tuple[str, str]:
  lines = content.splitlines()
  if pin.view == "head":
    return "\n".join(lines[: pin.lines]), f"first {pin.lines} lines"
  if pin.view == "tail":
    return "\n".join(lines[-pin.lines:]), f"last {pin.lines} lines"
  if pin.view == "match":
    want = pin.pattern.lower()
    hits = [ln for ln in lines if want in ln.lower()][-pin.lines:]
    return "\n".join(hits), f"lines with '{pin.pattern}'"
  return content.rstrip("\n"), "whole file"


def pinned_text(structure: Any, store: Any, phase: str) -> str:
  """The pinned views of `phase`, each under its header ("" when there are none)."""
  blocks = []
  for pin in structure.pins_for(phase):
    if store.exists(pin.file):
      body, what = _view(store.read_text(pin.file), pin)
    else:
      body, what = structure.text("pin_missing", file=pin.file), "missing"
    blocks.append(f"{structure.text('pin_header', file=pin.file, view=what)}\n{body}".rstrip())
  return "\n\n".join(blocks)


def update_harness_files(structure: Any, store: Any, views: Sequence[StepView]) -> list[str]:
  """Rewrites every harness-maintained file from its observer; returns the changed names."""
  changed = []
  for h in structure.harness_files:
    text = run_observer(h, views)
    content = text + "\n" if text else ""
    if not store.exists(h.file) or store.read_text(h.file) != content:
      try:
        store.write(h.file, content, harness=True)
      except StoreError:  # over a quota: keep the old content rather than end the episode
        continue
      changed.append(h.file)
  return changed


def apply_retention(structure: Any, store: Any) -> list[str]:
  """Trims every file with `keep_last` to its header plus its last lines; returns the trimmed."""
  trimmed = []
  for f in structure.files:
    if f.keep_last <= 0 or not store.exists(f.name):
      continue
    lines = store.read_text(f.name).splitlines()
    if len(lines) <= f.keep_header + f.keep_last:
      continue
    kept = lines[: f.keep_header] + lines[-f.keep_last:]
    store.write(f.name, "\n".join(kept) + "\n", harness=True)
    trimmed.append(f.name)
  return trimmed


def size_warnings(structure: Any, store: Any, phase: str) -> str:
  """Soft warnings for files past `size_warning` limits (exempt files skipped)."""
  w = structure.size_warning
  if phase not in w.phases or not (w.max_lines or w.max_bytes):
    return ""
  exempt = {e.lower() for e in w.exempt}
  out = []
  for info in store.index():
    if info.name.lower() in exempt:
      continue
    over_lines = w.max_lines and info.lines > w.max_lines
    over_bytes = w.max_bytes and info.size > w.max_bytes
    if over_lines or over_bytes:
      limit = f"{w.max_lines} lines" if over_lines else f"{w.max_bytes} bytes"
      out.append(structure.text("size_warning", file=info.name, lines=info.lines,
                                bytes=info.size, limit=limit))
  return "\n".join(out)


def active_mode(structure: Any, phase: str, views: Sequence[StepView]) -> str | None:
  """The first mode of `phase` whose observer has something to say now, or None."""
  for mode in structure.modes:
    if phase in mode.phases and run_observer(_ModeCondition(mode), views):
      return mode.name
  return None


class _ModeCondition:
  """A mode's condition as an observer spec."""

  def __init__(self, mode: Any):
    self.name = mode.when
    self.param = mode.param
