"""Influence by re-query: would the model have committed the same action without the lines?

At a PLAN step whose earlier turns retrieved memory lines (READ/SEARCH/TAIL
that showed something; COUNT shows a number, not lines) and whose later turn committed the action, the
committing turn's prompt is sent again N times as recorded ("kept") and N
times with every retrieval result's lines withheld ("withheld"), with the
same fixed sampling seeds in both arms. Influence = the share of withheld
samples whose action differs from the recorded one, minus that share for the
kept samples (the model's own sampling noise); it is credited to the
retrieval turns. Both arms share the whole prompt up to the withheld result,
so a prefix-caching server reuses it.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence
from typing import Any

from automem.agent.trajectory import Trajectory, Turn
from automem.credit.scored import ScoredTurn, TurnKey, by_path
from automem.credit.usage import shown_lines
from automem.envs.base import normalize_action_name
from automem.llm.types import LLMRequest
from automem.memory import READ_ONLY_OPS, parse_commands

WITHHELD = "(lines withheld)"


@dataclasses.dataclass(frozen=True)
class RequeryConfig:
  samples: int = 4  # N per arm
  seed: int = 0  # sampling seeds are seed, seed + 1, ...
  max_steps: int = 64  # at most this many PLAN steps are re-queried
  temperature: float | None = None  # None: the recorded action sampling temperature
  max_new_tokens: int | None = None  # None: the recorded action sampling budget


def _shown(c: dict) -> bool:
  """Did the command show the model memory lines (COUNT and hidden results do not)?"""
  returned = shown_lines(c) or {}
  return c.get("ok", False) and str(c.get("op")) in READ_ONLY_OPS and any(returned.values())


def withhold(messages: Sequence[dict[str, str]], results: Sequence[str]) -> list[dict[str, str]]:
  """`messages` with the body (every line after the first) of each result replaced."""
  out = []
  for m in messages:
    content = m["content"]
    if m.get("role") == "user":
      for r in results:
        head = r.split("\n", 1)[0]
        content = content.replace(r, f"{head}\n{WITHHELD}")
    out.append({**m, "content": content})
  return out


@dataclasses.dataclass(frozen=True)
class Probe:
  """One PLAN step to re-query."""

  trajectory: str
  step: int
  commit: Turn
  retrievals: tuple[TurnKey, ...]
  results: tuple[str, ...]


def find_probes(trajectories: Sequence[Trajectory]) -> list[Probe]:
  out = []
  for traj in trajectories:
    by_step: dict[int, list[Turn]] = collections.defaultdict(list)
    for t in traj.turns:
      if t.phase == "plan":
        by_step[t.step].append(t)
    for step, turns in sorted(by_step.items()):
      commit = next((t for t in turns if t.action is not None and t.messages), None)
      if commit is None:
        continue
      before = [t for t in turns if t is not commit and turns.index(t) < turns.index(commit)]
      hits = [(t, c) for t in before for c in t.commands if _shown(c)]
      results = tuple(c["result"] for _, c in hits
                      if any(c["result"] in m["content"] for m in commit.messages))
      if results:
        keys = tuple(dict.fromkeys((traj.path, *t.key) for t, _ in hits))
        out.append(Probe(traj.path, step, commit, keys, results))
  return out


def _action(text: str, names: Sequence[str]) -> str | None:
  name = parse_commands(text).action
  if name is None:
    return None
  canon = {normalize_action_name(n): n for n in names}
  return canon.get(normalize_action_name(name), name)


async def requery_scores(candidates: Sequence[ScoredTurn], trajectories: Sequence[Trajectory],
                         client: Any, cfg: RequeryConfig | None = None
                         ) -> tuple[list[ScoredTurn], list[dict[str, Any]]]:
  """Influence of each candidate retrieval turn; also one log row per probe."""
  cfg = cfg or RequeryConfig()
  trajs = by_path(list(trajectories))
  wanted = {c.key for c in candidates}
  probes = [p for p in find_probes(list(trajectories)) if set(p.retrievals) & wanted]
  probes = probes[: cfg.max_steps]
  requests: list[LLMRequest] = []
  for p in probes:
    sampling = trajs[p.trajectory].header.sampling.get("action", {})
    temperature = cfg.temperature if cfg.temperature is not None else sampling.get(
        "temperature", 0.7)
    budget = cfg.max_new_tokens or sampling.get("max_new_tokens", 256)
    for arm, msgs in (("kept", p.commit.messages), ("withheld",
                                                    withhold(p.commit.messages, p.results))):
      for k in range(cfg.samples):
        requests.append(LLMRequest(
            messages=msgs, temperature=temperature, top_p=sampling.get("top_p", 1.0),
            max_new_tokens=budget, stop=tuple(sampling.get("stop", ())), seed=cfg.seed + k,
            request_id=f"requery/{p.trajectory}/{p.step}/{arm}/{k}"))
  results = await client.generate(requests) if requests else []
  scores: dict[TurnKey, list[float]] = collections.defaultdict(list)
  log = []
  n = cfg.samples
  for i, p in enumerate(probes):
    names = trajs[p.trajectory].header.action_names
    chunk = results[2 * n * i: 2 * n * (i + 1)]
    kept = [_action(r.text, names) if r.ok else None for r in chunk[:n]]
    held = [_action(r.text, names) if r.ok else None for r in chunk[n:]]
    errors = sum(not r.ok for r in chunk)
    recorded = p.commit.action
    change_kept = sum(a != recorded for a in kept) / n
    change_held = sum(a != recorded for a in held) / n
    influence = change_held - change_kept
    log.append({"trajectory": p.trajectory, "step": p.step, "recorded": recorded,
                "kept": kept, "withheld": held, "errors": errors, "influence": influence,
                "retrievals": [list(k) for k in p.retrievals]})
    if errors:
      continue
    for key in p.retrievals:
      scores[key].append(influence)
  out = []
  for c in candidates:
    if c.key in scores:
      s = scores[c.key]
      out.append(c.rescored("requery", sum(s) / len(s),
                            f"action changed in {sum(s) / len(s):+.2f} more of {n} samples "
                            "without the retrieved lines"))
  return out, log
