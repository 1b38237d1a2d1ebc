"""Loop 1: propose structure revisions, race them against the incumbent, keep what is real.

`optimize_structure(config, workdir)` is what `experiments/optimize_structure.py`
calls. Each round:

1. parent: the incumbent, or every `pareto_every` rounds a version sampled
   from the Pareto front of every evaluated version (per achievement for
   Crafter, per task for MiniHack);
2. the parent plays `review_episodes` on train seeds; their traces and
   digest go to the proposer (offline mutations, a tool-using reviewer or a
   single-shot reviewer), which returns `candidates` proposals; a candidate
   that failed last round may get one continuation, and every
   `merge_every` rounds two accepted siblings' non-conflicting changes are
   merged into one more candidate;
3. the candidates race the incumbent (`automem.rollout.racing`) on a fresh
   window of selection seeds, all arms on the same seeds with the same
   sampling seeds; the incumbent is re-measured every round;
4. one lineage record per candidate (per-seed results, decision and its
   statistics); an accepted one becomes the incumbent and `revisions/vK.json`.

At the end every accepted version plays the test seeds once (`final.json`:
the v0..vK table with 95% CIs and paired differences). `calibrate` races v0
against v0 with another sampling-seed base instead (A/A): per-seed noise and
the false-accept rate on the user's own model and game.

Run directory::

  config.json  lineage.jsonl  revisions/vK.json  structures/<id>.json
  rounds/r<N>/proposals.json (+ reviewer transcripts)
  evals/review/<id>/  evals/r<N>/<block>/<arm>/  evals/final/<vK>/   ordinary run dirs
  final.json  summary.json

Killed at any point, a rerun on the same workdir resumes: finished episodes
are read back from their run dirs, saved proposals are not asked for again,
and decided rounds are folded from the lineage. A rerun whose config differs
in anything measured (every field but transport and progress, `RESUME_FREE`;
`rounds` too once final.json exists) is refused, naming the field.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import ml_collections
from absl import logging

from automem.memory import MemoryStructure
from automem.rollout import racing
from automem.rollout.evaluate import build_structure
from automem.rollout.metrics import EpisodeMetrics, mean_ci95
from automem.rollout.rundir import atomic_write_json
from automem.structure import lineage as lin
from automem.structure.arms import Evaluator
from automem.structure.digest import digest_run
from automem.structure.proposer import Proposal, continuation, merge, offline_proposals
from automem.structure.rules import Rules, check_revision
from automem.structure.traces import EpisodeTrace, load_run


@dataclasses.dataclass
class ReviewContext:
  """What a proposer sees in a round."""

  round: int
  parent: str
  structure: MemoryStructure
  traces: list[EpisodeTrace]
  digest: dict[str, Any]
  lineage: list[dict[str, Any]]
  k: int
  tried: set[str]
  rules: Rules
  out_dir: str  # where transcripts go
  initial_files: dict[str, str]
  deltas: dict[str, float] | None = None  # continuation: the failed candidate's per-seed deltas


class Proposer(Protocol):
  name: str

  def propose(self, ctx: ReviewContext) -> list[Proposal]: ...


class OfflineProposer:
  """Digest-driven mutations (`automem.structure.proposer`); no LLM."""

  name = "offline"

  def propose(self, ctx: ReviewContext) -> list[Proposal]:
    return offline_proposals(ctx.structure, ctx.digest, ctx.k, tried=ctx.tried, rules=ctx.rules)


def race_config(c: ml_collections.ConfigDict) -> racing.RaceConfig:
  return racing.RaceConfig(stages=tuple(c.stages), confirm_seeds=c.confirm_seeds, level=c.level,
                           drop_alpha=c.drop_alpha, test=c.test,
                           bootstrap_samples=c.bootstrap_samples, seed=c.seed)


def rules_of(c: ml_collections.ConfigDict) -> Rules:
  return Rules(require_structural=c.require_structural, model_owned_memory=c.model_owned_memory,
               harness_files=tuple(c.harness_files),
               allow_reference_files=c.allow_reference_files)


# Config fields a resumed loop may change (dotted globs): progress display, retries, endpoints
# and other transport; none of them changes what is measured.
RESUME_FREE = ("eval.progress", "eval.outage_wait_s", "eval.ray.*", "*.api_key", "*.api_key_env",
               "*.base_url", "*.backoff_base_s", "*.backoff_max_s", "*.concurrency",
               "*.max_retries", "*.max_retry_after_s", "*.timeout_s", "*.sglang.endpoints",
               "*.sglang.revive_after_s", "*.sglang.wait_ready_s", "*.local.tiny_cache_dir")
# ... and, until the final evaluation has run, how long it goes on.
RESUME_FREE_BEFORE_FINAL = ("rounds", "max_episodes")
_MISSING = "(missing)"


def _leaves(value: Any, prefix: str = "") -> dict[str, Any]:
  """Dotted leaf path -> value of a nested dict (the saved config)."""
  if isinstance(value, Mapping) and value:
    out: dict[str, Any] = {}
    for k, v in value.items():
      out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
    return out
  return {prefix: value}


class StructureLoop:
  """One optimisation run in `workdir` (see the module docstring)."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, *,
               clients: Mapping[str, Any] | None = None, env_factory: Any = None,
               proposer: Proposer | None = None):
    if config.seed_set != "selection":
      raise ValueError(f"the structure loop compares versions on the selection seed set only; "
                       f"config.seed_set is {config.seed_set!r}")
    self.config = config
    self.workdir = os.path.abspath(workdir)
    os.makedirs(os.path.join(self.workdir, "revisions"), exist_ok=True)
    self.game = config.game
    self.evaluator = Evaluator(self.workdir, config.eval, self.game, clients=clients,
                               env_factory=env_factory)
    self.race_config = race_config(config.race)
    self.rules = rules_of(config.rules)
    self.proposer = proposer or OfflineProposer()
    self.lineage_path = os.path.join(self.workdir, "lineage.jsonl")
    v0 = build_structure(self.game, config.eval.game[self.game])
    self.evaluator.save("v0", v0)
    atomic_write_json(os.path.join(self.workdir, "revisions", "v0.json"), v0.to_dict())
    self._check_resume(config)
    atomic_write_json(os.path.join(self.workdir, "config.json"), config.to_dict())

  def _check_resume(self, config: ml_collections.ConfigDict) -> None:
    """A resumed loop must measure as it started: every field of the saved config but the
    operational ones (`RESUME_FREE`) must match, else seed windows, scores and decisions of
    different settings would mix. Once `final.json` exists (the test seeds were played),
    `rounds` and `max_episodes` are fixed too: no more selecting and re-reporting on them."""
    path = os.path.join(self.workdir, "config.json")
    if not os.path.exists(path):
      return
    with open(path, encoding="utf-8") as f:
      saved = _leaves(json.load(f))
    new = _leaves(json.loads(json.dumps(config.to_dict(), default=str)))
    final = os.path.exists(os.path.join(self.workdir, "final.json"))
    free = RESUME_FREE + (() if final else RESUME_FREE_BEFORE_FINAL)
    for key in sorted(set(saved) | set(new)):
      if saved.get(key, _MISSING) != new.get(key, _MISSING) and not any(
          fnmatch.fnmatchcase(key, pattern) for pattern in free):
        why = " after its final test-seed evaluation" if final and key in (
            RESUME_FREE_BEFORE_FINAL) else ""
        raise ValueError(f"{self.workdir} was started with a different config.{key}{why} "
                         f"({saved.get(key, _MISSING)!r}, now {new.get(key, _MISSING)!r}); "
                         "use a new --workdir")

  # -- rounds ------------------------------------------------------------------------------

  def run(self) -> dict[str, Any]:
    try:
      return self._run()
    finally:
      self.evaluator.close()

  def _run(self) -> dict[str, Any]:
    c = self.config
    state = lin.fold(lin.read_lineage(self.lineage_path))
    for r in range(state.rounds_done, c.rounds):
      if c.max_episodes and state.episodes >= c.max_episodes:
        logging.info("episode budget spent (%d >= %d); stopping", state.episodes, c.max_episodes)
        break
      self.round(r, state)
      state = lin.fold(lin.read_lineage(self.lineage_path))
    summary: dict[str, Any] = {
        "rounds": state.rounds_done, "incumbent": state.labels.get(state.incumbent),
        "accepted": [state.labels[a] for a in state.accepted], "episodes": state.episodes,
        "lineage": self.lineage_path}
    if c.calibrate:
      summary["calibration"] = calibration_summary(lin.read_lineage(self.lineage_path))
    elif c.final.episodes > 0:
      summary["final"] = self.final(state)
    atomic_write_json(os.path.join(self.workdir, "summary.json"), summary)
    return summary

  def _window(self, r: int) -> int:
    return self.config.seed_offset + r * self.race_config.seeds_per_round

  def _traces(self, version: str) -> list[EpisodeTrace]:
    c = self.config.review
    if c.episodes <= 0:
      return []  # the proposer works from the structure and the lineage alone
    _, _, run_dir = self.evaluator.play(version, "review", "train", c.offset, c.episodes,
                                        max_steps=c.max_steps)
    return load_run(run_dir, {self.game: self.evaluator.load(version)})

  def _proposals(self, r: int, state: lin.LoopState, parent: str,
                 records: list[dict[str, Any]]) -> list[Proposal]:
    """This round's proposals: saved ones on resume, else the proposer's (+ continuation, merge)."""
    out_dir = os.path.join(self.workdir, "rounds", f"r{r}")
    path = os.path.join(out_dir, "proposals.json")
    if os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        return [Proposal(**p) for p in json.load(f)]
    os.makedirs(out_dir, exist_ok=True)
    c = self.config
    structure = self.evaluator.load(parent)
    traces = self._traces(parent)
    digest = digest_run(traces, structure)
    ctx = ReviewContext(r, parent, structure, traces, digest, records, c.candidates,
                        set(state.tried.get(parent, ())), self.rules, out_dir,
                        {f.name: f.content for f in structure.files})
    proposals = [dataclasses.replace(p, base=p.base or parent) for p in self.proposer.propose(ctx)]
    proposals += self._continuation(r, records, state, ctx)
    if c.merge_every and r and r % c.merge_every == 0:
      proposals += self._merge(records, state)
    unique = {(p.base, p.key()): p for p in reversed(proposals)}  # the first of each change set
    if len(unique) < len(proposals):
      logging.info("round %d: %d duplicate proposal(s) dropped", r, len(proposals) - len(unique))
      proposals = [p for p in proposals if unique.get((p.base, p.key())) is p]
    atomic_write_json(path, [p.to_dict() for p in proposals])
    return proposals

  def _continuation(self, r: int, records, state, ctx) -> list[Proposal]:
    if not self.config.continuation:
      return []
    failed = [x for x in records if x["round"] == r - 1
              and x["decision"] in ("rejected_test", "rejected_confirm", "dropped")
              and not x.get("continuation_of") and x["candidate"] not in state.continued
              and x.get("proposal")]
    if not failed:
      return []
    rec = max(failed, key=lambda x: x["stats"]["summary"]["mean_gain"])  # the closest miss
    deltas = rec["stats"].get("deltas", {})
    prev = Proposal(**rec["proposal"])
    base = self.evaluator.load(rec["base"])
    cont_fn: Callable[..., Any] | None = getattr(self.proposer, "continue_candidate", None)
    if cont_fn is not None:
      traces = load_run(rec["run_dirs"][0], {self.game: self.evaluator.load(rec["candidate"])})
      got = cont_fn(dataclasses.replace(ctx, structure=self.evaluator.load(rec["candidate"]),
                                        traces=traces, deltas=deltas, k=1))
      p = dataclasses.replace(got[0], base=rec["candidate"]) if got else None
    else:
      p = continuation(base, prev, deltas, self.rules)
      p = dataclasses.replace(p, base=rec["base"]) if p else None
    return [dataclasses.replace(p, continues=rec["candidate"])] if p else []

  def _merge(self, records, state) -> list[Proposal]:
    accepted = [x for x in records if x["decision"] == "accepted"]
    for i, a in enumerate(accepted):
      for b in accepted[i + 1:]:
        if a["base"] != b["base"]:
          continue
        p = merge(self.evaluator.load(a["base"]), Proposal(**a["proposal"]),
                  Proposal(**b["proposal"]), self.rules)
        if p is not None and p.key() not in state.tried.get(a["base"], set()):
          return [dataclasses.replace(p, base=a["base"])]
    return []

  def round(self, r: int, state: lin.LoopState) -> None:
    c = self.config
    records = lin.read_lineage(self.lineage_path)
    incumbent = state.incumbent
    arms: dict[str, tuple[str, int | None]] = {racing.INCUMBENT: (incumbent, None)}
    cands: dict[str, tuple[Proposal, MemoryStructure]] = {}
    if c.calibrate:
      p = Proposal({}, "A/A calibration: v0 with another sampling-seed base", proposer="aa",
                   base="v0")
      cands["aa"] = (p, self.evaluator.load("v0"))
      arms["aa"] = ("v0", c.eval.agent.seed + c.calibrate_seed_shift)
      parent = "v0"
    else:
      ids = ["v0", *[x["candidate"] for x in records]]
      parent = lin.pick_parent(state, r, c.pareto_every, c.race.seed, ids)
      for i, p in enumerate(self._proposals(r, state, parent, records)):
        base = self.evaluator.load(p.base)
        child = base.revise(p.changes, p.note)
        problems = check_revision(base, child, self.rules)
        if problems:
          logging.warning("round %d: proposal %d breaks the rules, skipped: %s", r, i, problems)
          continue
        cid = f"r{r}c{i}"
        self.evaluator.save(cid, child)
        cands[cid] = (p, child)
        arms[cid] = (cid, None)
    if not cands:
      logging.warning("round %d: no valid proposal; recording an empty round", r)
      lin.append_lineage(self.lineage_path, [{
          "round": r, "candidate": "", "parent": parent, "base": parent, "incumbent": incumbent,
          "decision": "no_proposal", "change_key": "", "episodes": 0, "stats": {}}])
      return
    metrics: dict[str, list[EpisodeMetrics]] = {a: [] for a in arms}
    run_dirs: dict[str, list[str]] = {a: [] for a in arms}
    window = self._window(r)

    def play(names, block: racing.Block) -> dict[str, dict[str, float]]:
      spec = c.race if block.kind == "race" else c.confirm
      out = {}
      for name in names:
        version, sampling_seed = arms[name]
        scores, recs, run_dir = self.evaluator.play(
            version, f"r{r}/{block.name}", "selection", window + block.offset, block.size,
            metric=spec.metric, max_steps=spec.max_steps, sampling_seed=sampling_seed,
            name=name if name != racing.INCUMBENT else f"incumbent-{version}")
        out[name] = scores
        metrics[name].extend(recs)
        run_dirs[name].append(run_dir)
      return out

    result = racing.race(list(cands), play, self.race_config)
    inc_obj = lin.objectives(metrics[racing.INCUMBENT], self.game)
    out = []
    next_label = f"v{len(state.accepted)}"
    for i, (cid, (p, child)) in enumerate(cands.items()):
      decision = result.decision if cid == result.survivor else (
          "dropped" if cid in result.dropped else "not_survivor")
      if cid == result.accepted:
        decision = "accepted_aa" if c.calibrate else "accepted"
      deltas = {u: s - result.scores[racing.INCUMBENT][u]
                for u, s in result.scores[cid].items() if u in result.scores[racing.INCUMBENT]}
      rec = {
          "round": r, "candidate": cid, "version": next_label if decision == "accepted" else "",
          "parent": parent, "base": p.base, "incumbent": incumbent, "change_key": p.key(),
          "proposal": p.to_dict(), "proposer": p.proposer, "transcript": p.transcript,
          "continuation_of": p.continues,
          "structure": self.evaluator.structure_path(cid if cid != "aa" else "v0"),
          "changes": child.changes, "decision": decision,
          "per_seed": {"candidate": result.scores[cid],
                       "incumbent": result.scores[racing.INCUMBENT]},
          "stats": {"summary": result.summaries[cid], "dropped": result.dropped.get(cid),
                    "test": result.test if cid == result.survivor else None,
                    "confirm": result.confirm if cid == result.survivor else None,
                    "deltas": deltas, "race": dataclasses.asdict(self.race_config)},
          "objectives": lin.objectives(metrics[cid], self.game),
          "incumbent_objectives": inc_obj, "run_dirs": run_dirs[cid],
          "episodes": result.episodes if i == 0 else 0,
      }
      if decision == "accepted":
        atomic_write_json(os.path.join(self.workdir, "revisions", f"{next_label}.json"),
                          {**child.to_dict(), "loop_id": cid})
      out.append(rec)
    lin.append_lineage(self.lineage_path, out)
    logging.info("round %d: %s", r, ", ".join(f"{x['candidate']} {x['decision']} "
                                                f"(gain {x['stats']['summary']['mean_gain']:+.2f})"
                                                for x in out))

  # -- final evaluation --------------------------------------------------------------------

  def final(self, state: lin.LoopState) -> dict[str, Any]:
    """Every accepted version once on test seeds: means with 95% CIs, paired differences."""
    c = self.config.final
    rows, scores = [], {}
    for vid in state.accepted:
      label = state.labels[vid]
      s, _, run_dir = self.evaluator.play(vid, "final", "test", c.offset, c.episodes,
                                          max_steps=c.max_steps, final=True, name=label)
      scores[label] = s
      mean, half = mean_ci95(list(s.values()))
      row = {"version": label, "id": vid, "n": len(s), "mean": mean, "ci95": half,
             "run_dir": run_dir}
      if label != "v0":
        row["vs_v0"] = racing.paired_summary(s, scores["v0"])
        prev = state.labels[state.accepted[state.accepted.index(vid) - 1]]
        row["vs_previous"] = racing.paired_summary(s, scores[prev])
      rows.append(row)
    table = {"rows": rows, "text": format_final(rows)}
    atomic_write_json(os.path.join(self.workdir, "final.json"), table)
    logging.info("final evaluation on test seeds:\n%s", table["text"])
    return table


def format_final(rows: list[dict[str, Any]]) -> str:
  lines = [f"{'version':<8} {'n':>4} {'test mean ± 95% CI':>20} {'vs v0 (paired)':>20} "
           f"{'vs previous':>20}"]
  for row in rows:
    cell = lambda d: f"{d['mean_gain']:+.2f} ± {d['gain_ci95']:.2f}" if d else "-"  # noqa: E731
    lines.append(f"{row['version']:<8} {row['n']:>4} "
                 f"{row['mean']:>12.2f} ± {row['ci95']:<5.2f} {cell(row.get('vs_v0')):>20} "
                 f"{cell(row.get('vs_previous')):>20}")
  return "\n".join(lines)


def calibration_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
  """A/A rounds: per-seed SD of the paired gains and how often v0 "beat" itself."""
  gains = [g for r in records for g in r.get("stats", {}).get("deltas", {}).values()]
  n = len(gains)
  mean = sum(gains) / n if n else float("nan")
  sd = (sum((g - mean) ** 2 for g in gains) / (n - 1)) ** 0.5 if n > 1 else float("nan")
  rounds = [r for r in records if r.get("candidate")]
  return {"rounds": len(rounds), "paired_units": n, "gain_mean": mean, "per_seed_gain_sd": sd,
          "per_episode_sd": sd / 2 ** 0.5 if n > 1 else float("nan"),
          "false_accepts": sum(r["decision"] == "accepted_aa" for r in rounds),
          "false_accept_rate": (sum(r["decision"] == "accepted_aa" for r in rounds) /
                                len(rounds)) if rounds else float("nan")}


def optimize_structure(config: ml_collections.ConfigDict, workdir: str, *,
                       clients: Mapping[str, Any] | None = None, env_factory: Any = None,
                       proposer: Proposer | None = None) -> dict[str, Any]:
  """Runs (or resumes) Loop 1 in `workdir` and returns its summary (see the module docstring).

  Args:
    config: an `experiments/configs/optimize_structure.py` config.
    workdir: the loop's run directory.
    clients, env_factory: for the agent's evaluations (tests inject them).
    proposer: instead of the one `config.proposer` builds.
  """
  if proposer is None:
    from automem.structure.reviewer import make_proposer

    proposer = make_proposer(config.proposer)
  return StructureLoop(config, workdir, clients=clients, env_factory=env_factory,
                       proposer=proposer).run()
