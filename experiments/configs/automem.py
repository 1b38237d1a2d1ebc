"""The AutoMem pipeline: v0 evaluation, Loop 1, Loop 2, final evaluation, report.

  python -m experiments.automem --workdir=runs/automem              # tiny, CPU
  python -m experiments.automem --config=experiments/configs/automem.py:paper \\
      --config.eval.llm.base_url=http://127.0.0.1:30000 --workdir=runs/automem_32b

Stages run in order in one workdir, each in its own subdirectory; a stage is
done when `<stage>/stage_summary.json` exists, so a rerun resumes (and an
evaluation stage resumes episode by episode). Loop 1 and Loop 2 are not wired
into the pipeline yet: the default skips them; feed them from artifacts with
`--config.artifacts.structure=FILE` (or `game=FILE;game=FILE`) and
`--config.artifacts.adapter=DIR`.

Expected (tiny default): the embedded evaluation (about 5 CPU-minutes, see
experiments/configs/evaluate.py) as v0, then the report (report/report.html,
plots, TensorBoard) and one static trace viewer per version (report/viewer/).

Variants (after `automem.py:`, comma-separated):
  tiny                 (default) the embedded evaluation, CPU, tiny local model
  paper                the paper's budgets: evaluate.py:full (SGLang server, BALROG step
                       caps, all eight MiniHack tasks); runs Loop 1 and Loop 2 (not wired yet)
  games=G1;G2          games to play
  episodes=N           episodes per task
  steps=N              step cap per episode (0 = the variant's default)
"""

from __future__ import annotations

import ml_collections

from automem.utils import parse_arg
from experiments.configs import evaluate

VARIANTS = ("paper", "games=crafter,episodes=1,steps=2")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, tiny=False, paper=False, games="", episodes=-1, steps=0)
  parts = ["full"] if a["paper"] else []
  if a["games"]:
    parts.append(f"games={a['games']}")
  if a["episodes"] > 0:
    parts.append(f"episodes={a['episodes']}")
  if a["steps"] > 0:
    parts.append(f"steps={a['steps']}")
  c = ml_collections.ConfigDict()
  # The evaluation every evaluating stage runs (v0, and each final version on the same seeds).
  c.eval = evaluate.get_config(",".join(parts) or None)
  c.stages = "v0,loop1,loop2,final,report"  # stage order (a subset runs only those)
  # Stages not to run (comma-separated). Loop 1 and Loop 2 are not wired in yet.
  c.skip = "" if a["paper"] else "loop1,loop2"
  c.artifacts = ml_collections.ConfigDict()
  c.artifacts.structure = ""  # Loop 1's result instead of running it: FILE or game=FILE;...
  c.artifacts.adapter = ""  # Loop 2's result instead of running it: a PEFT adapter directory
  c.report = ml_collections.ConfigDict()
  c.report.seed_set = c.eval.seed_set  # the table's seed set (the evaluation's)
  c.report.viewer = True  # also export a static trace viewer per version (report/viewer/)
  return c
