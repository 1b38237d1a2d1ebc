"""Memory: the sandboxed store, the command language and the MemoryStructure spec.

Nothing here knows about JAX, environments, models or LLMs.

Command language (`commands`), compatible with the paper's traces::

  <|OP|>arg1|arg2<|END|>       several per completion, prose allowed between
  <|DONE|>                     ends the LOG phase
  <|ACTION|>name<|END|>        commits a game action in PLAN

  op          arguments                  does
  LIST        -                          the file index
  READ        file[|start_line]          a page of a file (1-based lines; says where to go on)
  SEARCH      file|query                 matching lines, case-insensitive; file * = all files
  TAIL        file[|n]                   the last n lines (default 10)
  COUNT       file[|query]               number of matching lines (all lines without query)
  APPEND      file|text                  add line(s) at the end (creates the file)
  WRITE       file|text                  replace the whole file (creates it)
  CREATE      file[|description]         new empty file
  EDIT        file|old|new               replace the one exact occurrence of old
  DELETE      file                       delete
  RENAME      file|new_name              rename
  UPSERT      file|key|value             set the line "key: value" (replace or add, dedup)
  UPSERT_MAP  key|value                  UPSERT into the structure's map_file (paper's op)
  DONE        -                          end LOG (control)
  ACTION      name                       commit a game action (control)

Only the last argument may contain `|`. The parser is tolerant (code fences,
prose, lower-case ops, `<OP>` without bars, `</OP>` as end, a missing end
marker) and reports each command and each broken fragment with its
character span `(start, end)`: `text[start:end]` is exactly the command,
markers included. Which ops a phase may run is set by the structure (PLAN is
read-only by default).

Public API::

  parse_commands(text) -> ParseResult        .items (Command | ParseError, text order),
                                             .commands, .errors, .action, .done,
                                             .spans("memory"|"action"|"errors"|"all")
  Command(op, args, span, closed)            .is_action .is_control .render() .to_dict()
  ParseError(message, span, op, args)
  render_command(op, *args) -> str           canonical text; parse_commands reads it back
  command_reference(ops) -> str              usage lines for prompts
  OPS, ALL_OPS, READ_ONLY_OPS, WRITE_OPS, CONTROL_OPS, DEFAULT_PHASE_OPS

  MemoryStore(root, limits=, initial_files=, descriptions=, keep=, read_only=)
    (holds an exclusive lock on root until .close(); a second live store there is refused)
  MemoryStore.from_structure(root, structure)
    .reset() .snapshot() -> dict .restore(snapshot) .index() -> [FileInfo] .index_text()
    .names() .read_text(name) .total_bytes
  StoreLimits(max_file_bytes, max_files, max_total_bytes, max_read_chars,
              max_search_results, max_tail_lines, max_name_len)
  diff_snapshots(a, b) -> {"added", "removed", "changed": {name: {"unified", "ops"}}}
  apply_diff(a, diff) -> b;  diff_summary(diff) -> str

  execute(store, parsed, *, phase, structure=None) -> [CommandResult]
  CommandResult(op, args, span, ok, text, control, changed, meta)   .to_record()
  format_results(results) -> str             the {results} text of a follow-up prompt
  results_budget(limits) -> int              characters all results of one completion may take

  MemoryStructure (frozen, validated; to_json/from_json/save/load/revise)
    .system_prompt(phase, actions=, task=)   static text, prefix-cacheable
    .user_prompt(phase, **dynamic)           {file_index} {history} ... {observation}
    .follow_up_prompt(phase, results=, ...)
    .for_task(task) .with_mode(name) .text(key, **values) .resolve_fallback(actions)
  PhaseSpec, FileSpec, ObserverSpec, PinSpec, HarnessFileSpec, SizeWarning, ActionCheckSpec,
  TaskOverride, ModeSpec, HookSpec, TEXTS, StructureError      (modules structure_*.py)
  OBSERVERS, StepView, run_observers         the observer library (params beside the code)
  ACTION_CHECKS                              the action-check library
  structure_diff(a, b) -> str;  load_structure(game, variant="") -> shipped structure
  spec_reference() -> str                    editable fields and bounds, for the reviewer

Typical turn (the agent, issue 7)::

  parsed = parse_commands(completion)
  results = execute(store, parsed, phase="log", structure=structure)
  records = [r.to_record() for r in results]      # trajectory "commands"
  if parsed.done: ...                              # or parsed.action in PLAN
"""

from automem.memory.action_checks import ACTION_CHECKS
from automem.memory.commands import (
    ALL_OPS,
    CONTROL_OPS,
    DEFAULT_PHASE_OPS,
    OPS,
    READ_ONLY_OPS,
    WRITE_OPS,
    Command,
    OpSpec,
    ParseError,
    ParseResult,
    command_reference,
    parse_commands,
    render_command,
)
from automem.memory.executor import CommandResult, execute, format_results, results_budget
from automem.memory.names import InvalidName, normalize_name
from automem.memory.observers import OBSERVERS, StepView, available_observers, run_observers
from automem.memory.store import (
    FileInfo,
    MemoryStore,
    Snapshot,
    StoreError,
    StoreLimits,
    apply_diff,
    diff_snapshots,
    diff_summary,
)
from automem.memory.structure import (
    MemoryStructure,
    available_structures,
    load_structure,
    resolve_structure,
    structure_diff,
)
from automem.memory.structure_fields import (
    DYNAMIC_PLACEHOLDERS,
    FOLLOW_UP_PLACEHOLDERS,
    PHASES,
    STATIC_PLACEHOLDERS,
    TEXTS,
    Param,
    StructureError,
)
from automem.memory.structure_reference import spec_reference
from automem.memory.structure_types import (
    ActionCheckSpec,
    FileSpec,
    HarnessFileSpec,
    HookSpec,
    ModeSpec,
    ObserverSpec,
    PhaseSpec,
    PinSpec,
    SizeWarning,
    TaskOverride,
)

__all__ = [
    "ACTION_CHECKS",
    "ALL_OPS",
    "CONTROL_OPS",
    "DEFAULT_PHASE_OPS",
    "DYNAMIC_PLACEHOLDERS",
    "FOLLOW_UP_PLACEHOLDERS",
    "OBSERVERS",
    "OPS",
    "PHASES",
    "READ_ONLY_OPS",
    "STATIC_PLACEHOLDERS",
    "TEXTS",
    "WRITE_OPS",
    "ActionCheckSpec",
    "Command",
    "CommandResult",
    "FileInfo",
    "FileSpec",
    "HarnessFileSpec",
    "HookSpec",
    "InvalidName",
    "MemoryStore",
    "MemoryStructure",
    "ModeSpec",
    "ObserverSpec",
    "OpSpec",
    "Param",
    "ParseError",
    "ParseResult",
    "PhaseSpec",
    "PinSpec",
    "SizeWarning",
    "Snapshot",
    "StepView",
    "StoreError",
    "StoreLimits",
    "StructureError",
    "TaskOverride",
    "apply_diff",
    "available_observers",
    "available_structures",
    "command_reference",
    "diff_snapshots",
    "diff_summary",
    "execute",
    "format_results",
    "load_structure",
    "normalize_name",
    "parse_commands",
    "render_command",
    "resolve_structure",
    "results_budget",
    "run_observers",
    "spec_reference",
    "structure_diff",
]
