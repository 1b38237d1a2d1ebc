"""Writes the report of a run: the paper's table, behaviour statistics, plots, HTML, TensorBoard.

  python -m experiments.report runs/demo                    # one evaluation run = one version
  python -m experiments.report runs/versions --seed_set=    # a dir of run dirs, every seed set
  python -m experiments.report runs/automem --out=runs/automem/report   # a pipeline workdir

  python -m experiments.report runs/sweep/a runs/sweep/b --out=runs/sweep   # several workdirs:
                                                            # one comparison table

RUN_DIR is a run directory, a directory of run directories (one version each, v0
first), or a pipeline workdir (its final/ versions). Loop 1's lineage.jsonl and
Loop 2's ledger.jsonl are plotted when found there. Output (default RUN_DIR/report):
report.json, report.md, report.html (self-contained), plots/*.png|svg, tb/.
With several RUN_DIRs (pipeline workdirs, e.g. a sweep's variants) it writes one
comparison table instead (OUT/comparison.md and .json, default OUT = the first's parent).
"""

from __future__ import annotations

import os

from absl import app, flags

from automem.report import build_report, compare_workdirs, comparison_markdown, find_versions
from automem.utils import parse_flags, reports_errors

_OUT = flags.DEFINE_string("out", None, "Report directory (default RUN_DIR/report).")
_SEED_SET = flags.DEFINE_string("seed_set", "test", "Only episodes of this seed set ('' = all).")


@reports_errors
def main(argv: list[str]) -> None:
  if len(argv) < 2:
    raise app.UsageError("usage: python -m experiments.report RUN_DIR [RUN_DIR...] [--out=DIR] "
                         "[--seed_set=S]")
  if len(argv) > 2:
    roots = {os.path.basename(os.path.normpath(r)): r for r in argv[1:]}
    if len(roots) != len(argv) - 1:
      raise app.UsageError("several RUN_DIRs must have distinct names (they label the rows)")
    out = _OUT.value or os.path.dirname(os.path.abspath(os.path.normpath(argv[1])))
    print(comparison_markdown(compare_workdirs(roots, out, seed_set=_SEED_SET.value)))
    print(f"comparison: {os.path.join(out, 'comparison.md')}")
    return
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
  app.run(main, flags_parser=parse_flags)
