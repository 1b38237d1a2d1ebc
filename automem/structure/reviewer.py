"""LLM reviewers: a tool-using one and a single-shot JSON one; and `make_proposer`.

`Reviewer` holds a tool-calling conversation (OpenAI-compatible chat APIs or
Anthropic's Messages API, see `automem.llm`): the tools of `review_tools`,
ending with `submit_revision {analysis, changes, note, predicted_effects}`.
An invalid revision (a `StructureError` naming its field, or a rule
violation) goes back as the tool result, at most `max_invalid` times.
Budgets per proposal: tool calls, tokens, wall time; when one is spent the
reviewer is asked once, with `submit_revision` forced, to submit.

`SingleShotReviewer` is for servers without tool calling: the digest, the
field reference and the lineage in one prompt, the output constrained by a
JSON schema (SGLang `json_schema`, OpenAI `response_format`, a forced tool
on Anthropic), re-validated here.

Every LLM call's response is cached in the round's directory, keyed by the
request, so a rerun after a kill replays the conversation without calling
the API again; the whole transcript is saved next to the proposals.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Mapping
from typing import Any

import ml_collections
from absl import logging

from automem.llm import Grammar, LLMRequest, LLMResult, ToolCall, make_client
from automem.memory import StructureError, spec_reference
from automem.rollout.rundir import atomic_write_json
from automem.structure.digest import render_digest
from automem.structure.loop import OfflineProposer, ReviewContext
from automem.structure.proposer import Proposal
from automem.structure.review_tools import SUBMIT, ReviewTools, run_tool, tool_specs
from automem.structure.rules import check_revision

SYSTEM = """You review the memory structure of an LLM agent that plays {game}. The agent keeps
notes in memory files through commands (LOG phase: record what happened; PLAN phase: read
memory, then commit an action). The structure (prompt templates, files, ops, limits,
observers, history) is data you may revise; it is then raced against the current version on
fresh seeds and kept only if the agent measurably plays better.

Investigate first (episode table, steps, grep, memory files, op statistics, earlier
revisions), then call submit_revision once. Rules: the revision must change structure, not
only wording; memory operations stay the model's own decisions (do not pre-write notes into
its files, keep a write op in LOG)."""

SCHEMA = {"type": "object", "properties": {
    "analysis": {"type": "string"}, "changes": {"type": "object"}, "note": {"type": "string"},
    "predicted_effects": {"type": "string"}},
    "required": ["analysis", "changes", "note", "predicted_effects"]}


@dataclasses.dataclass(frozen=True)
class Budget:
  max_tool_calls: int = 40
  max_tokens: int = 400_000
  max_wall_s: float = 1800.0
  max_invalid: int = 3
  max_new_tokens: int = 4096
  temperature: float = 0.2
  seed: int = 0  # session i of a round samples with seed + i (k sessions differ)


class _CachedClient:
  """Calls the client once per distinct request; answers repeats from a JSONL cache."""

  def __init__(self, client: Any, path: str):
    self.client, self.path = client, path
    self.cache: dict[str, dict[str, Any]] = {}
    if os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        for line in f:
          if line.endswith("\n"):
            rec = json.loads(line)
            self.cache[rec["key"]] = rec["result"]
    self.calls = 0

  @staticmethod
  def key(req: LLMRequest) -> str:
    body = {"messages": req.messages, "tools": [dataclasses.asdict(t) for t in req.tools],
            "tool_choice": req.tool_choice, "grammar": req.grammar and req.grammar.spec,
            "temperature": req.temperature, "max_new_tokens": req.max_new_tokens,
            **({"seed": req.seed} if req.seed is not None else {})}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

  def generate(self, req: LLMRequest) -> LLMResult:
    k = self.key(req)
    if k in self.cache:
      d = dict(self.cache[k])
      d["tool_calls"] = tuple(ToolCall(**c) for c in d.get("tool_calls", ()))
      return LLMResult(**d)

    async def once() -> LLMResult:
      try:
        return (await self.client.generate([req]))[0]
      finally:
        await self.client.close()

    result = asyncio.run(once())
    self.calls += 1
    if result.ok:
      with open(self.path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"key": k, "result": result.to_dict()}) + "\n")
      self.cache[k] = result.to_dict()
    return result


def _validate(ctx: ReviewContext, args: Mapping[str, Any]) -> tuple[Proposal | None, str]:
  """A proposal from submitted arguments, or the error to send back (the field named)."""
  changes, note = args.get("changes"), args.get("note", "")
  if not isinstance(changes, dict) or not changes:
    return None, "error: changes must be a non-empty object of dotted path -> value"
  try:
    child = ctx.structure.revise(changes, str(note))
  except StructureError as e:
    return None, f"error: invalid revision at field {e.field!r}: {e.message}"
  problems = check_revision(ctx.structure, child, ctx.rules)
  if problems:
    return None, "error: the revision breaks the rules: " + "; ".join(problems)
  return Proposal(changes, str(note), str(args.get("analysis", "")),
                  str(args.get("predicted_effects", ""))), ""


def _sessions(reviewer: Any, ctx: ReviewContext, prefix: str) -> list[Proposal]:
  """`ctx.k` sessions with distinct sampling seeds; proposals tried before or repeating an
  earlier session's change set are dropped."""
  out: list[Proposal] = []
  seen = set(ctx.tried)
  for i in range(ctx.k):
    p = reviewer.session(ctx, f"{prefix}{i}", seed=reviewer.budget.seed + i)
    if p is not None and p.key() not in seen:
      seen.add(p.key())
      out.append(p)
  return out


class Reviewer:
  """The tool-using reviewer (see the module docstring)."""

  name = "reviewer"

  def __init__(self, client: Any, budget: Budget = Budget()):
    self.client = client
    self.budget = budget

  def propose(self, ctx: ReviewContext) -> list[Proposal]:
    return _sessions(self, ctx, "review")

  def continue_candidate(self, ctx: ReviewContext) -> list[Proposal]:
    """One continuation of a failed candidate: it sees its per-seed deltas and its traces."""
    p = self.session(ctx, "continuation", seed=self.budget.seed)
    return [p] if p is not None else []

  def _intro(self, ctx: ReviewContext) -> str:
    t = ctx.digest["totals"]
    text = (f"Round {ctx.round}. The structure under review is {ctx.parent} (version "
            f"{ctx.structure.version}). {t['episodes']} review episodes; mean progression "
            f"{t['progression_mean']:.2f}. Use the tools, then submit_revision.")
    if ctx.deltas is not None:
      vals = list(ctx.deltas.values())
      text += (f"\nThis structure is a candidate that was rejected: its per-seed deltas against "
               f"the incumbent were {json.dumps(ctx.deltas)} (mean "
               f"{sum(vals) / max(len(vals), 1):+.2f}). Its traces are the episodes you see. "
               "Revise it once more.")
    return text

  def session(self, ctx: ReviewContext, tag: str, seed: int | None = None) -> Proposal | None:
    b = self.budget
    client = _CachedClient(self.client, os.path.join(ctx.out_dir, f"{tag}.cache.jsonl"))
    tools = ReviewTools(ctx.traces, ctx.structure, ctx.digest, ctx.lineage)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM.format(game=ctx.structure.game)},
        {"role": "user", "content": self._intro(ctx)}]
    t0, tokens, calls, invalid = time.monotonic(), 0, 0, 0
    proposal, outcome, forced = None, "budget", False
    while True:
      spent = (calls >= b.max_tool_calls or tokens >= b.max_tokens
               or time.monotonic() - t0 >= b.max_wall_s)
      if spent and forced:
        outcome = "budget"
        break
      if spent:
        forced = True
        messages.append({"role": "user", "content": "The review budget is spent: call "
                         "submit_revision now with your best revision."})
      req = LLMRequest(messages=messages, tools=tool_specs(),
                       tool_choice=SUBMIT.name if forced else "auto",
                       temperature=b.temperature, max_new_tokens=b.max_new_tokens, seed=seed)
      result = client.generate(req)
      if not result.ok:
        outcome = f"llm error: {result.error}"
        break
      tokens += result.prompt_tokens + result.completion_tokens
      messages.append({"role": "assistant", "content": result.text,
                       **({"tool_calls": [c.to_message() for c in result.tool_calls]}
                          if result.tool_calls else {})})
      if not result.tool_calls:
        messages.append({"role": "user", "content": "Use the tools, and finish by calling "
                         "submit_revision."})
        calls += 1  # a turn without a call spends budget too
        continue
      done = False
      for call in result.tool_calls:
        calls += 1
        if call.error:
          text = f"error: {call.error}"
        elif call.name == SUBMIT.name:
          if done or proposal is not None:
            text = "error: already submitted"
          else:
            proposal, text = _validate(ctx, call.arguments)
            if proposal is None:
              invalid += 1
              text += (f" ({b.max_invalid - invalid} attempts left)"
                       if invalid < b.max_invalid else " (no attempts left)")
            else:
              text, done = "submitted", True
        else:
          text = run_tool(tools, call.name, call.arguments)
        messages.append({"role": "tool", "tool_call_id": call.id, "content": text})
      if done:
        outcome = "submitted"
        break
      if invalid >= b.max_invalid:
        outcome = "invalid"
        break
    path = os.path.join(ctx.out_dir, f"{tag}.transcript.json")
    atomic_write_json(path, {"outcome": outcome, "tool_calls": calls, "tokens": tokens,
                             "invalid": invalid, "wall_s": time.monotonic() - t0,
                             "llm_calls_made": client.calls, "messages": messages,
                             "proposal": proposal.to_dict() if proposal else None})
    logging.info("reviewer %s: %s after %d tool calls, %d tokens", tag, outcome, calls, tokens)
    if proposal is None:
      return None
    return dataclasses.replace(proposal, proposer=self.name, transcript=path)


class SingleShotReviewer:
  """Digest in the prompt, a JSON-schema-constrained answer, re-validated (bounded retries)."""

  name = "single_shot"

  def __init__(self, client: Any, budget: Budget = Budget()):
    self.client = client
    self.budget = budget

  def propose(self, ctx: ReviewContext) -> list[Proposal]:
    return _sessions(self, ctx, "single")

  def session(self, ctx: ReviewContext, tag: str, seed: int | None = None) -> Proposal | None:
    b = self.budget
    client = _CachedClient(self.client, os.path.join(ctx.out_dir, f"{tag}.cache.jsonl"))
    tools = ReviewTools(ctx.traces, ctx.structure, ctx.digest, ctx.lineage)
    prompt = (f"{render_digest(ctx.digest)}\n\nEARLIER REVISIONS\n{tools.lineage_tool({})}\n\n"
              f"{spec_reference()}\n\nCURRENT STRUCTURE\n{ctx.structure.to_json(indent=1)}\n\n"
              "Answer with one JSON object: analysis, changes (dotted path -> value), note, "
              "predicted_effects.")
    messages = [{"role": "system", "content": SYSTEM.format(game=ctx.structure.game)},
                {"role": "user", "content": prompt}]
    proposal, outcome = None, "invalid"
    for _ in range(b.max_invalid):
      result = client.generate(LLMRequest(
          messages=messages, grammar=Grammar("json_schema", json.dumps(SCHEMA)),
          temperature=b.temperature, max_new_tokens=b.max_new_tokens, seed=seed))
      if not result.ok:
        outcome = f"llm error: {result.error}"
        break
      messages.append({"role": "assistant", "content": result.text})
      try:
        args = json.loads(result.text)
        missing = [k for k in SCHEMA["required"] if k not in args]
        error = f"error: missing fields {missing}" if missing else ""
      except (json.JSONDecodeError, TypeError) as e:
        args, error = {}, f"error: the answer is not a JSON object: {e}"
      if not error:
        proposal, error = _validate(ctx, args)
      if proposal is not None:
        outcome = "submitted"
        break
      messages.append({"role": "user", "content": error + "\nAnswer again."})
    path = os.path.join(ctx.out_dir, f"{tag}.transcript.json")
    atomic_write_json(path, {"outcome": outcome, "messages": messages,
                             "llm_calls_made": client.calls,
                             "proposal": proposal.to_dict() if proposal else None})
    if proposal is None:
      return None
    return dataclasses.replace(proposal, proposer=self.name, transcript=path)


def make_proposer(config: ml_collections.ConfigDict, client: Any = None) -> Any:
  """The proposer `config.kind` names (`config`: the loop config's `proposer` section)."""
  if config.kind == "offline":
    return OfflineProposer()
  budget = Budget(max_tool_calls=config.max_tool_calls, max_tokens=config.max_tokens,
                  max_wall_s=config.max_wall_s, max_invalid=config.max_invalid,
                  max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                  seed=config.seed)
  client = client or make_client(config.llm)
  if config.kind == "reviewer":
    return Reviewer(client, budget)
  if config.kind == "single_shot":
    return SingleShotReviewer(client, budget)
  raise ValueError(f"unknown proposer kind {config.kind!r}; known: offline, reviewer, "
                   "single_shot")
