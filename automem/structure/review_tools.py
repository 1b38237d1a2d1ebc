"""The reviewer's tools: what a tool-using LLM may look at before it submits a revision.

Each tool is a `ToolSpec` (name, description, JSON-schema arguments) and a
handler `(ReviewTools, arguments) -> str`. Results are plain text, bounded
in length (`max_chars`), so a long trace never floods the reviewer's
context. `submit_revision` is handled by the reviewer itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from automem.llm.types import ToolSpec
from automem.memory import spec_reference
from automem.rollout import racing
from automem.structure.digest import digest_episode, render_digest
from automem.structure.traces import EpisodeTrace, memory_at

_STR = {"type": "string"}
_INT = {"type": "integer"}


def _obj(props: dict[str, Any], required: Sequence[str] = ()) -> dict[str, Any]:
  return {"type": "object", "properties": props, "required": list(required)}


SUBMIT = ToolSpec(
    "submit_revision",
    "Submit the revised structure and end the review. `changes` maps dotted paths of the "
    "structure (see field_reference) to new values, as MemoryStructure.revise takes them.",
    _obj({"analysis": _STR, "changes": {"type": "object"}, "note": _STR,
          "predicted_effects": _STR}, ["analysis", "changes", "note", "predicted_effects"]))

STEP_FIELDS = ("action", "fallback", "reward", "valid_action", "feedback", "progression",
               "achievements", "observation", "turns")


class ReviewTools:
  """Tool handlers over one round's review context (traces, structure, lineage)."""

  def __init__(self, traces: Sequence[EpisodeTrace], structure: Any, digest: Mapping[str, Any],
               lineage: Sequence[Mapping[str, Any]], *, max_chars: int = 12_000):
    self.traces = {t.episode_id: t for t in traces}
    self.structure = structure
    self.digest = digest
    self.lineage = lineage
    self.max_chars = max_chars
    self.initial = {f.name: f.content for f in structure.files}

  def _cut(self, text: str) -> str:
    if len(text) <= self.max_chars:
      return text
    return text[: self.max_chars] + f"\n... [cut at {self.max_chars} of {len(text)} characters]"

  def _trace(self, args: Mapping[str, Any]) -> EpisodeTrace:
    eid = str(args.get("episode_id", ""))
    if eid not in self.traces:
      raise ValueError(f"unknown episode_id {eid!r}; known: {', '.join(sorted(self.traces))}")
    return self.traces[eid]

  # -- handlers --------------------------------------------------------------------------------

  def episode_table(self, args: Mapping[str, Any]) -> str:
    return render_digest(self.digest, max_episodes=200)

  def read_steps(self, args: Mapping[str, Any]) -> str:
    t = self._trace(args)
    start, end = int(args.get("start", 0)), int(args.get("end", args.get("start", 0) + 5))
    fields = [f for f in args.get("fields") or STEP_FIELDS if f in STEP_FIELDS]
    rows = []
    for s in t.steps:
      if start <= s.step <= end:
        row: dict[str, Any] = {"step": s.step}
        for f in fields:
          if f == "turns":
            row["turns"] = [{"phase": x.phase, "turn": x.turn, "completion": x.completion,
                             "commands": [{"op": c.op, "args": list(c.args), "ok": c.ok,
                                           "result": c.result[:300]} for c in x.commands]}
                            for x in t.turns if x.step == s.step]
          else:
            row[f] = getattr(s, f)
        rows.append(row)
    return self._cut(json.dumps(rows, indent=1, default=str))

  def grep(self, args: Mapping[str, Any]) -> str:
    try:
      pattern = re.compile(str(args.get("pattern", "")), re.IGNORECASE)
    except re.error as e:
      raise ValueError(f"bad pattern: {e}") from e
    where = args.get("field", "completion")
    traces = [self._trace(args)] if args.get("episode_id") else list(self.traces.values())
    hits = []
    for t in traces:
      if where in ("completion", "results"):
        for x in t.turns:
          texts = [x.completion] if where == "completion" else [c.result for c in x.commands]
          hits += [f"{t.episode_id} step {x.step} {x.phase}: {line.strip()[:200]}"
                   for text in texts for line in text.splitlines() if pattern.search(line)]
      else:
        for s in t.steps:
          text = (s.observation or "") if where == "observation" else s.feedback
          hits += [f"{t.episode_id} step {s.step}: {line.strip()[:200]}"
                   for line in text.splitlines() if pattern.search(line)]
      if len(hits) > 200:
        break
    return self._cut("\n".join(hits[:200]) or "no matches")

  def memory_files(self, args: Mapping[str, Any]) -> str:
    t = self._trace(args)
    files = memory_at(t, int(args.get("step", 10**9)), self.initial)
    return self._cut("\n\n".join(f"=== {k} ({len(v)} chars)\n{v}" for k, v in sorted(files.items()))
                     or "(no files)")

  def op_statistics(self, args: Mapping[str, Any]) -> str:
    traces = [self._trace(args)] if args.get("episode_id") else list(self.traces.values())
    out = []
    for t in traces:
      d = digest_episode(t, self.structure)
      out.append({k: d[k] for k in ("episode_id", "memory_ops", "failed_commands",
                                    "failed_examples", "redundant_writes", "empty_searches",
                                    "files_never_read", "file_sizes")})
    return self._cut(json.dumps(out, indent=1))

  def _scores(self, version: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in self.lineage:
      per = r.get("per_seed") or {}
      if r.get("candidate") == version:
        out.update({f"r{r['round']}:{u}": s for u, s in per.get("candidate", {}).items()})
      if r.get("incumbent") == version:
        out.update({f"r{r['round']}:{u}": s for u, s in per.get("incumbent", {}).items()})
    return out

  def compare_versions(self, args: Mapping[str, Any]) -> str:
    a, b = str(args.get("a", "")), str(args.get("b", ""))
    sa, sb = self._scores(a), self._scores(b)
    if not sa or not sb:
      raise ValueError(f"no per-seed results for {a if not sa else b!r}; versions with results: "
                       + ", ".join(sorted({r.get('candidate') for r in self.lineage} |
                                          {r.get('incumbent') for r in self.lineage})))
    summary = racing.paired_summary(sa, sb)
    units = sorted(set(sa) & set(sb))[:100]
    table = "\n".join(f"{u}: {sa[u]:.2f} vs {sb[u]:.2f} ({sa[u] - sb[u]:+.2f})" for u in units)
    return self._cut(f"{a} vs {b} on {summary['n']} shared seeds: {json.dumps(summary)}\n{table}")

  def field_reference(self, args: Mapping[str, Any]) -> str:
    return self._cut(spec_reference() + "\n\nCURRENT STRUCTURE (JSON):\n" +
                     self.structure.to_json(indent=1))

  def lineage_tool(self, args: Mapping[str, Any]) -> str:
    rows = []
    for r in self.lineage:
      if not r.get("candidate"):
        continue
      s = r.get("stats", {}).get("summary") or {}
      rows.append(f"round {r['round']} {r['candidate']} ({r.get('proposer')}) from {r['base']}: "
                  f"{r['decision']}; mean gain {s.get('mean_gain', float('nan')):+.2f} over "
                  f"{s.get('n', 0)} seeds\n  note: {r.get('proposal', {}).get('note', '')}\n"
                  f"  changes: {r.get('changes', '')[:600]}")
    return self._cut("\n".join(rows) or "no earlier revisions")


Handler = Callable[[ReviewTools, Mapping[str, Any]], str]

TOOLS: dict[str, tuple[ToolSpec, Handler]] = {
    "episode_table": (ToolSpec("episode_table", "Digest of every review episode: one row each "
                               "(progression, steps, fallbacks, invalid actions, unchanged "
                               "observations, longest stretch without progress, memory ops), "
                               "totals, and recurring failure clusters.", _obj({})),
                      ReviewTools.episode_table),
    "read_steps": (ToolSpec("read_steps", "Steps start..end of one episode with the chosen fields "
                            f"({', '.join(STEP_FIELDS)}; turns = LLM completions and command "
                            "results).", _obj({"episode_id": _STR, "start": _INT, "end": _INT,
                                               "fields": {"type": "array", "items": _STR}},
                                              ["episode_id"])), ReviewTools.read_steps),
    "grep": (ToolSpec("grep", "Regex search (case-insensitive) over completions, command results, "
                      "observations or feedback of all episodes or one.",
                      _obj({"pattern": _STR, "episode_id": _STR,
                            "field": {"type": "string", "enum": ["completion", "results",
                                                                 "observation", "feedback"]}},
                           ["pattern"])), ReviewTools.grep),
    "memory_files": (ToolSpec("memory_files", "The memory files of an episode after a step.",
                              _obj({"episode_id": _STR, "step": _INT}, ["episode_id"])),
                     ReviewTools.memory_files),
    "op_statistics": (ToolSpec("op_statistics", "Memory-command statistics per episode: ops by "
                               "kind, failed commands with examples, redundant writes, empty "
                               "searches, files never read, file sizes.",
                               _obj({"episode_id": _STR})), ReviewTools.op_statistics),
    "compare_versions": (ToolSpec("compare_versions", "Paired per-seed comparison of two "
                                  "evaluated versions (ids from the lineage, e.g. v0, r1c0).",
                                  _obj({"a": _STR, "b": _STR}, ["a", "b"])),
                         ReviewTools.compare_versions),
    "field_reference": (ToolSpec("field_reference", "Every editable structure field with its "
                                 "bounds, and the current structure as JSON.", _obj({})),
                        ReviewTools.field_reference),
    "lineage": (ToolSpec("lineage", "Earlier revisions (accepted and rejected): notes, diffs, "
                         "measured effect and decision.", _obj({})), ReviewTools.lineage_tool),
}


def tool_specs() -> list[ToolSpec]:
  return [spec for spec, _ in TOOLS.values()] + [SUBMIT]


def run_tool(tools: ReviewTools, name: str, args: Mapping[str, Any]) -> str:
  """A tool's text result; a bad call gets an error message (never an exception)."""
  if name not in TOOLS:
    return f"error: unknown tool {name!r}; tools: {', '.join([*TOOLS, SUBMIT.name])}"
  try:
    return TOOLS[name][1](tools, args)
  except (ValueError, TypeError, KeyError) as e:
    return f"error: {e}"
