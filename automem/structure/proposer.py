"""Proposals, and the offline proposer: digest-driven structure mutations, no LLM.

A `Proposal` is what any proposer hands the loop: dotted-path changes for
`MemoryStructure.revise`, a note, the analysis behind it and the predicted
effects. The offline proposer is the baseline a researcher compares an LLM
reviewer against, and what the embedded CPU run uses: each rule below reads
the run digest, says how strongly the evidence calls for its mutation, and
the strongest mutations not tried before are proposed.

- an observer whose trigger is frequent: unchanged observations -> the
  stagnation observer (stronger), repeated actions -> repetition, low
  vitals events -> vitals;
- a file never read in most episodes -> its tail pinned into the PLAN
  prompt, or PLAN gets more turns to read it;
- a file that grows but is never read -> retention (keep its last lines),
  or a tighter file size limit;
- a phase that always ends early -> fewer turns; one that always hits its
  cap -> more;
- many fallback actions -> more PLAN turns and a longer history;
- long stretches without progress -> a longer history window.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from automem.memory import MemoryStructure, StructureError
from automem.structure.rules import DEFAULT_RULES, Rules, check_revision


@dataclasses.dataclass(frozen=True)
class Proposal:
  """A candidate revision.

  Attributes:
    changes: dotted path -> value (see `MemoryStructure.revise`).
    note: why, recorded in the revision.
    analysis: what the evidence showed.
    predicted_effects: what the proposer expects to change.
    proposer: "offline", "reviewer", "single_shot", "merge", "continuation", ...
    transcript: path of the reviewer's saved transcript ("" for none).
    base: the version the changes apply to ("" = the round's parent).
    continues: the failed candidate this one continues ("" = none).
  """

  changes: Mapping[str, Any]
  note: str
  analysis: str = ""
  predicted_effects: str = ""
  proposer: str = "offline"
  transcript: str = ""
  base: str = ""
  continues: str = ""

  def key(self) -> str:
    """A canonical form of the changes (to avoid proposing the same thing twice)."""
    return json.dumps(dict(self.changes), sort_keys=True, default=str)

  def to_dict(self) -> dict[str, Any]:
    return {**dataclasses.asdict(self), "changes": dict(self.changes)}


@dataclasses.dataclass(frozen=True)
class _Mutation:
  strength: float  # how strongly the digest calls for it (0 = not at all)
  changes: dict[str, Any]
  note: str
  analysis: str
  predicted: str


def _observer_index(s: MemoryStructure, name: str) -> int | None:
  return next((i for i, o in enumerate(s.observers) if o.name == name), None)


def _observer(s: MemoryStructure, name: str, params: dict[str, Any], strength: float,
              analysis: str, predicted: str) -> list[_Mutation]:
  i = _observer_index(s, name)
  if i is None:
    return [_Mutation(strength, {f"observers.{len(s.observers)}": {
        "name": name, "phases": ["log", "plan"], "params": params}},
        f"enable the {name} observer", analysis, predicted)]
  current = dict(s.observers[i].params)
  if all(current.get(k) == v for k, v in params.items()):
    return []
  return [_Mutation(strength * 0.8, {f"observers.{i}.params": {**current, **params}},
                    f"tune the {name} observer to {params}", analysis, predicted)]


def _rules(s: MemoryStructure, d: Mapping[str, Any]) -> Iterable[_Mutation]:
  t, eps = d["totals"], d["episodes"]
  n_eps = max(len(eps), 1)
  if t["unchanged_rate"] > 0.05:
    yield from _observer(s, "stagnation", {"min_unchanged": 1, "strong_after": 2},
                         t["unchanged_rate"] * 2,
                         f"{t['unchanged_rate']:.0%} of steps left the observation unchanged",
                         "fewer repeated no-op actions")
  if t["invalid_rate"] > 0.05:
    yield from _observer(s, "repetition", {"window": 8, "min_repeats": 3}, t["invalid_rate"] * 2,
                         f"{t['invalid_rate']:.0%} of actions were invalid",
                         "fewer repeated invalid actions")
  repeats = [c for c in d["clusters"] if c["kind"] in ("fallback action", "invalid action")]
  if repeats:
    yield from _observer(s, "repetition", {"window": 6, "min_repeats": 3},
                         sum(c["episodes"] for c in repeats) / n_eps / 2,
                         f"repeated action failures in {repeats[0]['episodes']} episodes",
                         "the agent notices loops sooner")
  if s.game in ("crafter", "crafter_original") and _observer_index(s, "vitals") is None:
    yield from _observer(s, "vitals", {"threshold": 0.4}, 0.15,
                         "survival needs are not flagged", "fewer deaths from hunger/thirst")
  unread = {k: v for k, v in t["files_never_read"].items() if v >= 0.5}
  if unread:
    name = max(unread, key=lambda k: unread[k])
    yield _Mutation(unread[name] * 0.6, {"plan.max_iterations":
                                         min(s.plan.max_iterations + 2, 20)},
                    f"give PLAN two more turns so it can read {name}",
                    f"{name} was never read in {unread[name]:.0%} of episodes",
                    "more reads before committing")
    pins = getattr(s, "pins", ())
    if not any(getattr(p, "file", "") == name for p in pins):
      changes: dict[str, Any] = {f"pins.{len(pins)}": {"file": name, "phases": ["plan"],
                                                       "view": "tail", "lines": 10}}
      if "{pinned}" not in s.plan.user and "{helpers}" in s.plan.user:
        changes["plan.user"] = s.plan.user.replace("{helpers}", "{pinned}\n{helpers}", 1)
      yield _Mutation(unread[name] * 0.9, changes, f"pin the tail of {name} into every PLAN "
                      "prompt", f"{name} is never read in {unread[name]:.0%} of episodes",
                      "its notes inform the action")
  grows_unread = [(sum(e["file_sizes"].get(n, 0) for e in eps) / n_eps, n) for n in unread]
  grows_unread = [(b, n) for b, n in grows_unread if b > 0]
  if grows_unread:
    size, name = max(grows_unread)
    idx = next((i for i, f in enumerate(s.files) if f.name == name), None)
    if idx is not None and not getattr(s.files[idx], "keep_last", 1):
      yield _Mutation(0.45, {f"files.{idx}.keep_last": 40},
                      f"keep only the last 40 lines of {name} (it grows unread)",
                      f"{name} reaches {size:.0f} bytes but is never read",
                      "shorter files, recent notes first")
    cap = max(1024, int(2 ** math.floor(math.log2(max(size, 2)))))
    if cap < s.limits.max_file_bytes:
      yield _Mutation(0.3, {"limits.max_file_bytes": cap},
                      f"cap file size at {cap} bytes ({name} grows unread)",
                      f"{name} reaches {size:.0f} bytes but is never read",
                      "shorter files, cheaper reads")
  for phase in ("log", "plan"):
    spec = s.phase(phase)
    turns = [e["llm_turns_per_step"] for e in eps]
    if not turns:
      continue
    per_step = sum(turns) / len(turns) / 2  # two phases share the per-step turn count
    if per_step < spec.max_iterations / 3 and spec.max_iterations > 1:
      yield _Mutation(0.2, {f"{phase}.max_iterations": max(1, math.ceil(per_step) + 1)},
                      f"shorten {phase.upper()} (it ends after ~{per_step:.1f} turns)",
                      f"{phase.upper()} always ends early", "faster steps, same play")
    elif per_step >= spec.max_iterations * 0.9 and spec.max_iterations < 20:
      yield _Mutation(0.4, {f"{phase}.max_iterations": min(20, spec.max_iterations + 2)},
                      f"lengthen {phase.upper()} (it always hits its cap)",
                      f"{phase.upper()} uses all {spec.max_iterations} turns",
                      "phases finish instead of being cut off")
  if t["fallback_rate"] > 0.2:
    yield _Mutation(t["fallback_rate"], {"plan.max_iterations": min(20, s.plan.max_iterations + 1),
                                         "history_length": min(200, s.history_length + 4)},
                    "more PLAN turns and a longer history (many fallback actions)",
                    f"{t['fallback_rate']:.0%} of steps played the fallback action",
                    "more committed actions")
  if t["longest_without_progress_mean"] > 2 * s.history_length:
    yield _Mutation(0.5, {"history_length": min(200, s.history_length * 2)},
                    f"double the history window to {min(200, s.history_length * 2)} steps",
                    f"stretches without progress average {t['longest_without_progress_mean']:.0f}"
                    f" steps, longer than the {s.history_length}-step history",
                    "the agent sees its recent loop")
  if not s.log_first_step:
    yield _Mutation(0.05, {"log_first_step": True}, "log before the first action",
                    "the first observation is never logged", "earlier map notes")


def offline_proposals(structure: MemoryStructure, digest: Mapping[str, Any], k: int, *,
                      tried: Iterable[str] = (), rules: Rules = DEFAULT_RULES) -> list[Proposal]:
  """The `k` strongest valid mutations of `structure` not in `tried` (Proposal.key values)."""
  seen = set(tried)
  out = []
  for m in sorted(_rules(structure, digest), key=lambda m: -m.strength):
    p = Proposal(m.changes, m.note, m.analysis, m.predicted, "offline")
    if p.key() in seen:
      continue
    try:
      child = structure.revise(p.changes, p.note)
    except StructureError:
      continue  # a field this structure version does not have yet
    if check_revision(structure, child, rules):
      continue
    seen.add(p.key())
    out.append(p)
    if len(out) == k:
      break
  return out


def continuation(parent: MemoryStructure, failed: Proposal, deltas: Mapping[str, float],
                 rules: Rules = DEFAULT_RULES) -> Proposal | None:
  """The offline follow-up of a failed candidate: push its numeric changes further when its
  per-seed deltas lean positive, back off halfway when they lean negative; None if neither
  applies or the result is invalid."""
  mean = sum(deltas.values()) / len(deltas) if deltas else 0.0
  base = parent.to_dict()
  changes: dict[str, Any] = {}
  for path, value in failed.changes.items():
    old: Any = base
    for part in path.split("."):  # None where the failed candidate added the field or item
      if isinstance(old, list) and part.isdigit():
        old = old[int(part)] if int(part) < len(old) else None
      else:
        old = old.get(part) if isinstance(old, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and isinstance(old, int):
      step = value - old
      new = value + step if mean > 0 else old + step // 2
      if new != value and new != old:
        changes[path] = new
  if not changes:
    return None
  p = Proposal(changes, f"continuation of '{failed.note}' (mean per-seed delta {mean:+.2f})",
               f"the candidate's paired deltas had mean {mean:+.2f}", failed.predicted_effects,
               "continuation")
  try:
    child = parent.revise(p.changes, p.note)
  except StructureError:
    return None
  return None if check_revision(parent, child, rules) else p


def merge(parent: MemoryStructure, a: Proposal, b: Proposal,
          rules: Rules = DEFAULT_RULES) -> Proposal | None:
  """Two siblings' changes combined, when no path of one is inside a path of the other."""

  def overlap(p: str, q: str) -> bool:
    return p == q or p.startswith(q + ".") or q.startswith(p + ".")

  if any(overlap(p, q) for p in a.changes for q in b.changes):
    return None
  changes = {**a.changes, **b.changes}
  p = Proposal(changes, f"merge of '{a.note}' and '{b.note}'", "both were accepted on their own",
               f"{a.predicted_effects}; {b.predicted_effects}", "merge")
  try:
    child = parent.revise(p.changes, p.note)
  except StructureError:
    return None
  return None if check_revision(parent, child, rules) else p
