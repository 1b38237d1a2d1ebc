"""Writes the report of a run: the paper's table, behaviour statistics, plots, HTML, TensorBoard.

  python -m experiments.report runs/demo                    # one evaluation run = one version
  python -m experiments.report runs/versions --seed_set=    # a dir of run dirs, every seed set
  python -m experiments.report runs/automem --out=runs/automem/report   # a pipeline workdir

RUN_DIR is a run directory, a directory of run directories (one version each, v0
first), or a pipeline workdir (its final/ versions). Loop 1's lineage.jsonl and
Loop 2's ledger.jsonl are plotted when found there. Output (default RUN_DIR/report):
report.json, report.md, report.html (self-contained), plots/*.png|svg, tb/.
"""

from __future__ import annotations

import os

from absl import app, flags

from automem.report import build_report, find_versions

_OUT = flags.DEFINE_string("out", None, "Report directory (default RUN_DIR/report).")
_SEED_SET = flags.DEFINE_string("seed_set", "test", "Only episodes of this seed set ('' = all).")


def main(argv: list[str]) -> None:
  if len(argv) != 2:
    raise app.UsageError("usage: python -m experiments.report RUN_DIR [--out=DIR] [--seed_set=S]")
  root = argv[1]
  versions = find_versions(root)
  if not versions:
    raise app.UsageError(f"{root}: no run directory (a folder with trajectories/) found there")
  out = _OUT.value or os.path.join(root, "report")
  report = build_report(versions, out, seed_set=_SEED_SET.value, search_roots=(root,))
  for game, rows in report["table"].items():
    for r in rows:
      print(f"{game:<10} {r['version']:<12} n={r['n']:<4} progression "
            f"{r['progression_mean']:.2f} ± {r['progression_ci95']:.2f}")
  print(f"report: {os.path.abspath(os.path.join(out, 'report.html'))}")


if __name__ == "__main__":
  app.run(main)
