"""LLM judge: an OpenAI-compatible model rates memory turns against a rubric file.

The rubric (default `automem/credit/rubrics/judge.md`, editable; `{game}` and
`{task}` are filled in) is the system message; the user message shows the
turn: the end of its prompt, the completion, and the command results. The
judge answers `{"score": 0-10, "reason": "..."}`; the score is scaled to
[0, 1]. Every call -- request, answer, parsed score or why none -- is
appended to a JSONL log. Items are all candidates or a sample stratified by
(game, phase), the same share from every stratum.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import random
import re
from collections.abc import Sequence
from typing import Any

from automem.agent.trajectory import Trajectory
from automem.credit.scored import ScoredTurn, by_path
from automem.llm.types import LLMRequest

DEFAULT_RUBRIC = os.path.join(os.path.dirname(__file__), "rubrics", "judge.md")
_JSON = re.compile(r"\{.*?\}", re.DOTALL)


@dataclasses.dataclass(frozen=True)
class JudgeConfig:
  rubric: str = DEFAULT_RUBRIC  # path of the rubric file
  max_items: int = 0  # 0: judge every candidate; else a stratified sample of this size
  seed: int = 0  # of the sample and the judge's sampling
  prompt_chars: int = 2000  # the end of the turn's prompt shown to the judge
  temperature: float = 0.0
  max_new_tokens: int = 200


def stratified_sample(items: Sequence[ScoredTurn], n: int, seed: int) -> list[ScoredTurn]:
  """`n` items, spread evenly over (game, phase) strata (all items when n is 0 or more)."""
  if n <= 0 or n >= len(items):
    return list(items)
  strata: dict[tuple[str, str], list[ScoredTurn]] = collections.defaultdict(list)
  for c in items:
    strata[(c.game, c.phase)].append(c)
  rng = random.Random(seed)
  for v in strata.values():
    rng.shuffle(v)
  out: list[ScoredTurn] = []
  keys = sorted(strata)
  while len(out) < n:
    for k in keys:
      if strata[k] and len(out) < n:
        out.append(strata[k].pop())
  return out


def item_text(traj: Trajectory, c: ScoredTurn, prompt_chars: int) -> str:
  t = traj.turn(c.step, c.phase, c.turn)
  prompt = t.messages[-1]["content"] if t.messages else ""
  if len(prompt) > prompt_chars:
    prompt = "..." + prompt[-prompt_chars:]
  results = "\n".join(f"- {t.commands[i]['op']}: {t.commands[i]['result'][:300]}"
                      for i in c.commands)
  return (f"Step {c.step}, {c.phase.upper()} phase, turn {c.turn}.\n\n"
          f"## What the agent was shown (end)\n{prompt}\n\n"
          f"## The agent's reply\n{t.completion}\n\n## Results of the rated commands\n{results}")


def parse_verdict(text: str) -> tuple[float | None, str]:
  """(score in [0, 1], reason) from the judge's answer; (None, why) when it does not parse."""
  for m in _JSON.finditer(text or ""):
    try:
      d = json.loads(m.group(0))
      score = float(d["score"])
    except (ValueError, KeyError, TypeError):
      continue
    if 0 <= score <= 10:
      return score / 10.0, str(d.get("reason", ""))[:500]
  return None, f"no verdict in the answer: {(text or '')[:120]!r}"


async def judge_scores(candidates: Sequence[ScoredTurn], trajectories: Sequence[Trajectory],
                       client: Any, cfg: JudgeConfig | None = None, *,
                       log_path: str | None = None, model: str | None = None
                       ) -> list[ScoredTurn]:
  """Asks the judge about each (sampled) candidate; unparsable answers score nothing."""
  cfg = cfg or JudgeConfig()
  with open(cfg.rubric, encoding="utf-8") as f:
    rubric = f.read()
  trajs = by_path(list(trajectories))
  items = stratified_sample(candidates, cfg.max_items, cfg.seed)
  requests = []
  for i, c in enumerate(items):
    system = rubric.format(game=c.game, task=c.task)
    requests.append(LLMRequest(
        messages=[{"role": "system", "content": system},
                  {"role": "user", "content": item_text(trajs[c.trajectory], c,
                                                        cfg.prompt_chars)}],
        temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed + i,
        request_id=f"judge/{c.episode_id}/{c.step}/{c.phase}/{c.turn}"))
  results = await client.generate(requests) if requests else []
  out = []
  rows = []
  for c, req, res in zip(items, requests, results):
    score, reason = parse_verdict(res.text) if res.ok else (None, f"call failed: {res.error}")
    rows.append({"trajectory": c.trajectory, "step": c.step, "phase": c.phase, "turn": c.turn,
                 "model": model, "messages": list(req.messages), "answer": res.text,
                 "error": res.error, "score": score, "reason": reason,
                 "prompt_tokens": res.prompt_tokens, "completion_tokens": res.completion_tokens})
    if score is not None:
      out.append(c.rescored("judge", score, reason))
  if log_path is not None:
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as f:
      for row in rows:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
  return out
