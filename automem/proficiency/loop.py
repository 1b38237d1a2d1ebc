"""Loop 2: collect, select, train a LoRA memory specialist, deploy it beside the base, race it.

`improve_proficiency(config, workdir)` is what `experiments/improve_proficiency.py`
calls. Each round k (k > 0: expert iteration, collecting with round k-1's
specialist):

1. collect `collect.episodes` on fresh *train* seeds with the structure (a
   structure file, Loop 1's best revision, or the game's v0);
2. select decisions per selector combination of the recipe grid
   (`automem.credit.aselect_decisions`);
3. train one LoRA specialist per recipe with the trainer (loss on memory-command
   tokens only), the best-ranked `examples` selected turns, `epochs` passes;
4. deploy each as an adapter on the agent's one server (`deploy.AdapterHost`:
   the local engine's shared base, or SGLang's dynamic LoRA loading) under a
   fresh name, and play the two-model agent (memory turns: specialist; action
   commit: base) against the base agent on *selection* seeds:
5. successive halving over `halving.rungs` (every live recipe and the base on
   the same fresh seeds; the best 1/eta by mean paired gain go on; skipped once
   one recipe is left), then the
   survivor races the base (`automem.rollout.racing`, paired, Bonferroni-free
   with one candidate) on fresh selection seeds and is accepted or not.

`ledger.jsonl` gets one row per recipe and round: data source, selectors,
examples, train loss, adapter, per-seed results, the paired difference with
its 95% CI, the memory-command figure of both arms, and the decision. At the
end the chosen specialist (the accepted one with the largest race gain) plays
the *test* seeds once against the base agent (`final.json`, paired, 95% CI).

Seed discipline: collection plays train seeds, every comparison selection
seeds; test seeds are played only by `final()` (the `Evaluator` refuses them
otherwise), and selection refuses test-set trajectories.

Run directory::

  config.json  structures/s0.json  ledger.jsonl  final.json  summary.json
  evals/k<K>/collect/<arm>/       collection run dirs (train seeds)
  rounds/k<K>/select/<selectors>/  selected_turns.jsonl, selection_stats.json
  rounds/k<K>/recipes/<id>/        selected_turns.jsonl (the recipe's share), train/ (trainer
                                   workdir: dataset, checkpoints, export/adapter)
  evals/k<K>/<block>/<arm>/        halving rungs and race blocks
  evals/final/<adapter name>/, evals/final/base/   the test-seed evaluation

Killed at any point, a rerun resumes: finished episodes are read back from
their run dirs, selections and datasets are kept, training resumes from its
last checkpoint, decided rounds are read from the ledger.
"""

from __future__ import annotations

import asyncio
import dataclasses
import glob
import json
import math
import os
import re
from collections.abc import Mapping
from typing import Any

import ml_collections
from absl import logging

from automem.credit import aselect_decisions
from automem.credit.select import selection_config
from automem.memory import MemoryStructure
from automem.proficiency import deploy, run, selection
from automem.proficiency.behaviour import clean_log_turns
from automem.proficiency.recipes import Recipe, recipe_grid, split_selectors, train_config
from automem.proficiency.synthetic import write_synthetic_trajectories
from automem.rollout import racing
from automem.rollout.evaluate import build_structure
from automem.rollout.metrics import mean_ci95
from automem.rollout.rundir import atomic_write_json
from automem.structure.arms import Evaluator
from automem.structure.loop import race_config
from automem.utils.errors import InputError
from automem.utils.files import tmp_path

BASE = "base"
STRUCTURE = "s0"


def loop1_best(workdir: str) -> str:
  """The structure file of Loop 1's incumbent in its run dir (summary.json, else the highest
  revisions/vK.json)."""
  rev = os.path.join(workdir, "revisions")
  summary = os.path.join(workdir, "summary.json")
  if os.path.exists(summary):
    with open(summary, encoding="utf-8") as f:
      label = json.load(f).get("incumbent")
    if label and os.path.exists(os.path.join(rev, f"{label}.json")):
      return os.path.join(rev, f"{label}.json")
  found = sorted(glob.glob(os.path.join(rev, "v*.json")),
                 key=lambda p: int(re.sub(r"\D", "", os.path.basename(p)) or 0))
  if not found:
    raise FileNotFoundError(f"{workdir} holds no Loop 1 revisions (revisions/vK.json)")
  return found[-1]


def check_config(c: ml_collections.ConfigDict) -> None:
  """Refuses values the loop cannot use, naming the field (`InputError`)."""
  for field, value, low in (("rounds", c.rounds, 1), ("collect.episodes", c.collect.episodes, 1),
                            ("halving.eta", c.halving.eta, 2), ("final.episodes",
                                                                c.final.episodes, 0),
                            ("collect.synthetic_episodes", c.collect.synthetic_episodes, 0)):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
      raise InputError(f"config.{field}", f"must be a whole number >= {low}, got {value!r}")
  if any(int(n) < 1 for n in c.halving.rungs):
    raise InputError("config.halving.rungs", f"seeds per rung must be >= 1: {c.halving.rungs}")
  if c.deploy not in ("local", "sglang"):
    raise InputError("config.deploy", f"must be 'local' or 'sglang', got {c.deploy!r}")
  if c.deploy != c.eval.llm.backend:
    raise InputError("config.deploy", f"adapters are served by the agent's own server; deploy "
                     f"{c.deploy!r} does not match config.eval.llm.backend "
                     f"{c.eval.llm.backend!r}")
  if c.structure and not os.path.isfile(c.structure):
    raise InputError("config.structure", f"{c.structure}: no such file")
  if c.structure_workdir and not os.path.isdir(c.structure_workdir):
    raise InputError("config.structure_workdir", f"{c.structure_workdir}: no such directory")
  if c.deploy == "sglang" and not c.train.model.checkpoint:
    raise InputError("config.train.model.checkpoint", "name the HF checkpoint the SGLang server "
                     "serves (adapters are trained on it)")
  try:
    recipe_grid(c.grid, c.max_recipes)
  except ValueError as e:
    raise InputError("config.grid", str(e)) from None


@dataclasses.dataclass
class Candidate:
  """A trained recipe of one round."""

  recipe: Recipe
  dir: str
  examples: int = 0
  selected: str = ""
  train: dict[str, Any] = dataclasses.field(default_factory=dict)
  adapter: str = ""  # PEFT dir
  name: str = ""  # served adapter name

  @property
  def arm(self) -> str:
    return self.recipe.id


class ProficiencyLoop:
  """One Loop 2 run in `workdir` (see the module docstring).

  Args:
    config: an `experiments/configs/improve_proficiency.py` config.
    workdir: the run directory (created; an existing one is resumed).
    clients: role -> LLM client for every episode (tests inject them); the "base" client
      serves the adapters.
    env_factory: `make_env`-like factory (tests).
    host: where adapters are deployed (default: from `config.deploy` and the base client).
    stop_training_after: stop every training job at this step (a kill, for tests).
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, *,
               clients: Mapping[str, Any] | None = None, env_factory: Any = None,
               host: deploy.AdapterHost | None = None, stop_training_after: int | None = None):
    check_config(config)
    self.config = config
    self.workdir = os.path.abspath(workdir)
    os.makedirs(self.workdir, exist_ok=True)
    self.game = config.game
    self.evaluator = Evaluator(self.workdir, config.eval, self.game, clients=clients,
                               env_factory=env_factory)
    self.evaluator.save(STRUCTURE, self._structure())
    self.race_config = race_config(config.race)
    self.recipes = recipe_grid(config.grid, config.max_recipes)
    self._host = host
    self._loaded: dict[str, str] = {}
    self.stop_training_after = stop_training_after
    self.ledger_path = os.path.join(self.workdir, "ledger.jsonl")
    self._check_resume()
    atomic_write_json(os.path.join(self.workdir, "config.json"), config.to_dict())

  def _structure(self) -> MemoryStructure:
    c = self.config
    if c.structure:
      return MemoryStructure.load(c.structure)
    if c.structure_workdir:
      return MemoryStructure.load(loop1_best(c.structure_workdir))
    return build_structure(self.game, c.eval.game[self.game])

  def _check_resume(self) -> None:
    path = os.path.join(self.workdir, "config.json")
    if not os.path.exists(path):
      return
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
    new = json.loads(json.dumps(self.config.to_dict(), default=str))
    # `rounds` may grow (more expert-iteration rounds) and `final` may change; nothing else.
    for key in ("game", "collect", "grid", "max_recipes", "halving", "race", "seed_offset",
                "select", "train", "base_two_model", "deploy"):
      if saved.get(key) != new.get(key):
        raise ValueError(f"{self.workdir} was started with a different config.{key} "
                         f"({saved.get(key)!r}, now {new.get(key)!r}); use a new --workdir")

  # -- serving -----------------------------------------------------------------------------

  @property
  def host(self) -> deploy.AdapterHost:
    if self._host is None:
      base = self.evaluator._agent_clients()["base"]
      self._host = deploy.make_host(self.config.deploy, base)
    return self._host

  def _serve(self, cand: Candidate) -> None:
    if cand.name not in self._loaded:
      self.host.load(cand.name, cand.adapter)
      self._loaded[cand.name] = cand.adapter

  def _release(self, cand: Candidate) -> None:
    if self._loaded.pop(cand.name, None) is not None:
      self.host.unload(cand.name)

  def _agent(self, cand: Candidate | None) -> dict[str, Any]:
    if cand is None:
      return {"two_model": bool(self.config.base_two_model), "specialist_adapter": ""}
    return {"two_model": True, "specialist_adapter": cand.name}

  def play(self, cand: Candidate | None, tag: str, seed_set: str, offset: int, n: int, *,
           max_steps: int = 0, final: bool = False, name: str = ""
           ) -> tuple[dict[str, float], str]:
    """Plays one arm (`None`: the base agent) on seeds of `seed_set` into
    `evals/<tag>/<name or the arm>`; unit -> score, run dir."""
    if cand is not None:
      self._serve(cand)
    scores, _, run_dir = self.evaluator.play(
        STRUCTURE, tag, seed_set, offset, n, metric=self.config.race.metric,
        max_steps=max_steps, final=final, name=name or (BASE if cand is None else cand.arm),
        agent=self._agent(cand))
    return scores, run_dir

  # -- the loop ----------------------------------------------------------------------------

  def run(self) -> dict[str, Any]:
    try:
      return self._run()
    finally:
      for name in list(self._loaded):
        self.host.unload(name)
      self._loaded.clear()
      self.evaluator.close()

  def _run(self) -> dict[str, Any]:
    c = self.config
    ledger = read_ledger(self.ledger_path, len(self.recipes))
    chosen: Candidate | None = None
    for k in range(c.rounds):
      rows = [r for r in ledger if r["round"] == k]
      if not rows:
        rows = self.round(k, chosen)
        append_ledger(self.ledger_path, rows)
        ledger += rows
      chosen = self._chosen(ledger) or chosen
    summary: dict[str, Any] = {"rounds": c.rounds, "recipes": len(self.recipes),
                               "ledger": self.ledger_path,
                               "accepted": [r["recipe_id"] for r in ledger
                                            if r["decision"] == "accepted"]}
    pick = self._chosen(ledger) or (self._best_tried(ledger) if c.final.always else None)
    summary["chosen"] = pick.arm if pick else None
    if pick is not None and c.final.episodes > 0:
      summary["final"] = self.final(pick, accepted=pick.arm in summary["accepted"])
    atomic_write_json(os.path.join(self.workdir, "summary.json"), summary)
    return summary

  def _candidate_from_row(self, row: Mapping[str, Any]) -> Candidate:
    return Candidate(Recipe(**row["recipe"]), row["dir"], row["examples"], row["selection"],
                     row["train"], row["adapter"], row["adapter_name"])

  def _chosen(self, ledger: list[dict[str, Any]]) -> Candidate | None:
    ok = [r for r in ledger if r["decision"] == "accepted"]
    if not ok:
      return None
    best = max(ok, key=lambda r: r["paired"]["mean_gain"])
    return self._candidate_from_row(best)

  def _best_tried(self, ledger: list[dict[str, Any]]) -> Candidate | None:
    raced = [r for r in ledger if r.get("raced")]
    if not raced:
      return None
    return self._candidate_from_row(max(raced, key=lambda r: r["paired"]["mean_gain"]))

  def _window(self, k: int) -> int:
    rung_seeds = sum(self.config.halving.rungs)
    return self.config.seed_offset + k * (rung_seeds + self.race_config.seeds_per_round)

  def collect(self, k: int, source: Candidate | None) -> str:
    """Round k's collection run dir (train seeds; k > 0 plays round k-1's specialist)."""
    cc = self.config.collect
    _, run_dir = self.play(source, f"k{k}/collect", "train", cc.offset + k * cc.episodes,
                           cc.episodes, max_steps=cc.max_steps)
    return run_dir

  def select(self, k: int, spec: str, sources: list[str]) -> str:
    """selected_turns.jsonl of selector combination `spec` over `sources` (kept on resume)."""
    out = os.path.join(self.workdir, "rounds", f"k{k}", "select", _safe(spec))
    path = os.path.join(out, selection.SELECTION_FILE)
    if os.path.exists(path):
      return path
    filters, scorers = split_selectors(spec)
    d = self.config.select.to_dict()
    d.update(filters=filters, scorers=scorers, allow_test_seeds=False)
    clients = {}
    if {"requery", "counterfactual"} & set(scorers):
      clients["policy"] = self.evaluator._agent_clients()["base"]
    asyncio.run(aselect_decisions(sources, out, selection_config(d), clients))
    return path

  def _train(self, k: int, recipe: Recipe, selected: str, base_model: str) -> Candidate:
    cdir = os.path.join(self.workdir, "rounds", f"k{k}", "recipes", recipe.id)
    cand = Candidate(recipe, cdir)
    refs = selection.read_selected_turns(selected)
    refs.sort(key=lambda r: -(r.score if r.score is not None else r.weight))
    if recipe.examples:
      refs = refs[:recipe.examples]
    cand.selected = os.path.join(cdir, selection.SELECTION_FILE)
    if not os.path.exists(cand.selected):
      selection.write_selected_turns(cand.selected, refs)
    cand.examples = len(refs)
    if not refs:
      return cand
    tdir = os.path.join(cdir, "train")
    done = os.path.join(tdir, "summary.json")
    if os.path.exists(done):
      with open(done, encoding="utf-8") as f:
        summary = json.load(f)
    else:
      summary = {}
    if not summary.get("finished"):
      base = train_config(self.config.train, recipe, selection=cand.selected,
                          base_model=base_model, rows=1)
      data_dir = run.prepare_dataset(base.data, base_model, tdir)
      with open(os.path.join(data_dir, "stats.json"), encoding="utf-8") as f:
        rows = json.load(f)["train"]["rows"]
      if rows == 0:
        cand.train = {"rows": 0}
        return cand
      tc = train_config(self.config.train, recipe, selection=cand.selected,
                        base_model=base_model, rows=rows)
      summary = run.train(tc, tdir, stop_after=self.stop_training_after)
      if not summary.get("finished"):
        raise TrainingStopped(f"training of {recipe.id} stopped at step {summary['step']}")
    cand.train = {"steps": summary["step"], "loss": summary.get("train", {}).get("loss"),
                  "eval_loss": summary.get("eval", {}).get("loss")}
    cand.adapter = os.path.join(tdir, "export", "adapter")
    cand.name = deploy.adapter_name(f"k{k}-{recipe.id}", cand.adapter)
    return cand

  def base_model(self) -> str:
    """The HF checkpoint under the agent's model: what adapters are trained on."""
    c = self.config
    if c.train.model.checkpoint:
      return c.train.model.checkpoint
    llm = c.eval.llm
    if llm.backend == "local":
      if llm.local.checkpoint:
        return llm.local.checkpoint
      from automem.llm.config import tiny_checkpoint_dir

      return tiny_checkpoint_dir(llm)
    raise ValueError("config.train.model.checkpoint must name the served model's HF checkpoint "
                     f"(backend {llm.backend!r})")

  def round(self, k: int, source: Candidate | None) -> list[dict[str, Any]]:
    """Round k: collect, select, train every recipe, halve, race the survivor; ledger rows."""
    c = self.config
    collected = self.collect(k, source)
    sources = [collected, *[p for p in c.collect.extra_sources.split(",") if p]]
    if c.collect.synthetic_episodes:
      sdir = os.path.join(self.workdir, "rounds", f"k{k}", "synthetic")
      if not os.path.isdir(sdir):
        tmp = tmp_path(sdir)
        write_synthetic_trajectories(tmp, c.collect.synthetic_episodes, seed=k)
        os.replace(tmp, sdir)
      sources.append(sdir)
    base_model = self.base_model()
    specs = {r.selectors for r in self.recipes}
    selected = {s: self.select(k, s, sources) for s in sorted(specs)}
    cands = [self._train(k, r, selected[r.selectors], base_model) for r in self.recipes]
    rows = {cd.arm: self._row(k, cd, source, collected) for cd in cands}
    live = [cd for cd in cands if cd.adapter]
    for cd in cands:
      if not cd.adapter:
        rows[cd.arm]["decision"] = "no_data"
    window = self._window(k)
    base_scores: dict[str, float] = {}
    cand_scores: dict[str, dict[str, float]] = {cd.arm: {} for cd in live}
    run_dirs: dict[str, list[str]] = {cd.arm: [] for cd in live}
    offset = window
    h = c.halving
    for i, size in enumerate(h.rungs):
      if len(live) <= 1:
        break
      s, _ = self.play(None, f"k{k}/rung{i}", "selection", offset, size)
      base_scores.update({f"rung{i}:{u}": v for u, v in s.items()})
      for cd in live:
        s, d = self.play(cd, f"k{k}/rung{i}", "selection", offset, size)
        cand_scores[cd.arm].update({f"rung{i}:{u}": v for u, v in s.items()})
        run_dirs[cd.arm].append(d)
      offset += size
      gain = {cd.arm: racing.paired_summary(cand_scores[cd.arm], base_scores)["mean_gain"]
              for cd in live}
      keep = max(1, math.ceil(len(live) / h.eta))
      ranked = sorted(live, key=lambda cd: -_finite(gain[cd.arm]))
      for cd in ranked[keep:]:
        rows[cd.arm]["decision"] = f"pruned_rung{i}"
        self._release(cd)
      live = ranked[:keep]
    result = None
    if live:
      arms = {cd.arm: cd for cd in live}
      race_offset = window + sum(h.rungs)

      def play(names, block: racing.Block) -> dict[str, dict[str, float]]:
        out = {}
        for name in names:
          cd = None if name == racing.INCUMBENT else arms[name]
          s, d = self.play(cd, f"k{k}/{block.name}", "selection", race_offset + block.offset,
                           block.size)
          if cd is not None:
            run_dirs[name].append(d)
          out[name] = s
        return out

      result = racing.race(list(arms), play, self.race_config)
      for name in arms:
        row = rows[name]
        row["raced"] = True
        row["decision"] = result.decision if name == result.survivor else (
            "dropped" if name in result.dropped else "not_survivor")
        row["stats"] = {"summary": result.summaries[name], "dropped": result.dropped.get(name),
                        "test": result.test if name == result.survivor else None,
                        "confirm": result.confirm if name == result.survivor else None}
        cand_scores[name].update(result.scores[name])
        base_scores.update(result.scores[racing.INCUMBENT])
    for cd in cands:
      row = rows[cd.arm]
      if cd.arm in cand_scores:
        row["per_seed"] = {"specialist": cand_scores[cd.arm],
                           "base": {u: base_scores[u] for u in cand_scores[cd.arm]
                                    if u in base_scores}}
        row["paired"] = racing.paired_summary(cand_scores[cd.arm], base_scores)
        row["run_dirs"] = run_dirs[cd.arm]
        # the base agent's episodes on the same blocks (sibling run dirs)
        paired_base = [os.path.join(os.path.dirname(d), BASE) for d in run_dirs[cd.arm]]
        row["memory_commands"] = {"specialist": clean_log_turns(run_dirs[cd.arm]),
                                  "base": clean_log_turns(paired_base)}
      if row["decision"] != "accepted":
        self._release(cd)
    logging.info("round %d: %s", k, ", ".join(f"{a} {r['decision']}" for a, r in rows.items()))
    return list(rows.values())

  def _row(self, k: int, cd: Candidate, source: Candidate | None,
           collected: str) -> dict[str, Any]:
    return {"round": k, "recipe_id": cd.arm, "recipe": dataclasses.asdict(cd.recipe),
            "data_source": {"run_dir": collected, "policy": source.arm if source else BASE,
                            "extra": self.config.collect.extra_sources},
            "selectors": cd.recipe.selectors, "examples": cd.examples, "selection": cd.selected,
            "train": cd.train, "dir": cd.dir, "adapter": cd.adapter, "adapter_name": cd.name,
            "per_seed": {}, "paired": racing.paired_summary({}, {}), "raced": False,
            "decision": "untested"}

  # -- final evaluation --------------------------------------------------------------------

  def final(self, cand: Candidate, *, accepted: bool) -> dict[str, Any]:
    """The chosen specialist and the base agent, once, on test seeds (paired, 95% CIs)."""
    f = self.config.final
    # named by the served adapter (round, recipe, weights): another choice never reads these
    spec, spec_dir = self.play(cand, "final", "test", f.offset, f.episodes,
                               max_steps=f.max_steps, final=True, name=cand.name)
    base, base_dir = self.play(None, "final", "test", f.offset, f.episodes,
                               max_steps=f.max_steps, final=True)
    out = {"recipe_id": cand.arm, "accepted": accepted, "adapter": cand.adapter,
           "specialist": dict(zip(("mean", "ci95"), mean_ci95(list(spec.values())))),
           "base": dict(zip(("mean", "ci95"), mean_ci95(list(base.values())))),
           "paired": racing.paired_summary(spec, base),
           "memory_commands": {"specialist": clean_log_turns(spec_dir),
                               "base": clean_log_turns(base_dir)},
           "per_seed": {"specialist": spec, "base": base}, "run_dirs": [spec_dir, base_dir]}
    atomic_write_json(os.path.join(self.workdir, "final.json"), out)
    logging.info("final (test seeds): specialist %.2f ± %.2f, base %.2f ± %.2f, paired %+.2f ± "
                 "%.2f", out["specialist"]["mean"], out["specialist"]["ci95"],
                 out["base"]["mean"], out["base"]["ci95"], out["paired"]["mean_gain"],
                 out["paired"]["gain_ci95"])
    return out


class TrainingStopped(RuntimeError):
  """A training job stopped before its last step (preempted); rerun to resume."""


def _safe(spec: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.+-]", "-", spec.replace("/", "--").replace(";", "+"))


def _finite(x: float) -> float:
  return x if math.isfinite(x) else -math.inf


def read_ledger(path: str, per_round: int = 0) -> list[dict[str, Any]]:
  """The ledger's rows; a torn last write (a kill) and a round with fewer than `per_round`
  rows are dropped (and cut from the file), so that round is decided again."""
  if not os.path.exists(path):
    return []
  rows, keep = [], 0
  with open(path, "rb") as f:
    data = f.read()
  for line in data.splitlines(keepends=True):
    try:
      rows.append(json.loads(line))
    except ValueError:
      break
    keep += len(line)
  counts: dict[int, int] = {}
  for r in rows:
    counts[r["round"]] = counts.get(r["round"], 0) + 1
  short = {k for k, n in counts.items() if n < per_round}
  if short:
    keep = sum(len(line) for line, r in zip(data.splitlines(keepends=True), rows)
               if r["round"] not in short)
    rows = [r for r in rows if r["round"] not in short]
  if keep != len(data):
    with open(path, "r+b") as f:
      f.truncate(keep)
  return rows


def append_ledger(path: str, rows: list[dict[str, Any]]) -> None:
  """Appends a round's rows in one write (a killed write leaves a torn line, which the round
  replays)."""
  with open(path, "a", encoding="utf-8") as f:
    f.write("".join(json.dumps(r, default=str) + "\n" for r in rows))


def improve_proficiency(config: ml_collections.ConfigDict, workdir: str, **kwargs: Any
                        ) -> dict[str, Any]:
  """Runs (or resumes) Loop 2 in `workdir`; see `ProficiencyLoop` for the keyword arguments."""
  return ProficiencyLoop(config, workdir, **kwargs).run()
