"""A sweep of pipeline variants (ablations) into sibling workdirs, compared in one table.

  python -m experiments.sweep --root=runs/sweep \\
      --variant=ablation=none --variant=ablation=structure_only
  python -m experiments.sweep --root=runs/sweep_paper --dry_run \\
      --variant=paper,ablation=structure_only --variant=paper,ablation=training_only \\
      --variant=paper,ablation=both --variant=paper,layout=paper

Expected (measured, the first command above with --variant=layout=paper instead of
structure_only, tiny model already built): 60 s wall on the shared 2-core machine; both
variants' v0 at progression 0.00 (fallback rates per game side by side) in one table.

Each --variant is an experiments/configs/automem.py variant; its workdir is
ROOT/<variant as a name>. Here they run one after another (a rerun resumes
each); --dry_run only prints the plan and the one-job-per-variant cluster
commands (SLURM and TPU pod, launch/README.md), which write into the same
workdirs. At the end (and with --compare_only, after the cluster jobs) the
variants are compared in one table: ROOT/comparison.md and comparison.json.
A variant that fails is reported and the others still run; the exit status
is then 1.
--set=KEY=VALUE overrides a field of every variant's config (e.g.
--set=eval.llm.base_url=http://127.0.0.1:30000).
"""

from __future__ import annotations

import os

import ml_collections
from absl import app, flags

from automem.models.tiny import local_compile_cache
from automem.pipeline.sweep import cluster_commands, run_sweep, sweep_plan, workdirs
from automem.report import compare_workdirs, comparison_markdown
from automem.utils import parse_flags, reports_errors
from experiments.configs.automem import get_config

_VARIANTS = flags.DEFINE_multi_string("variant", None, "An automem.py variant (repeatable).")
_ROOT = flags.DEFINE_string("root", "runs/sweep", "Parent directory of the variants' workdirs.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the plan and cluster commands; run nothing.")
_COMPARE_ONLY = flags.DEFINE_bool("compare_only", False, "Only compare the existing workdirs.")
_SET = flags.DEFINE_multi_string("set", [], "KEY=VALUE override of every variant's config.")
_SEED_SET = flags.DEFINE_string("seed_set", "test", "The table's seed set ('' = all).")


def override(config: ml_collections.ConfigDict, assignments: list[str]) -> None:
  """Applies dotted KEY=VALUE assignments, each value cast to the field's type."""
  for item in assignments:
    key, sep, value = item.partition("=")
    if not sep:
      raise app.UsageError(f"--set={item!r}: expected KEY=VALUE")
    node_path, _, leaf = key.strip().rpartition(".")
    node = config
    for part in filter(None, node_path.split(".")):
      node = node[part]
    if leaf not in node:
      raise app.UsageError(f"--set={item!r}: the config has no field {key!r}")
    old = node[leaf]
    node[leaf] = (value.lower() in ("1", "true", "yes")) if isinstance(old, bool) else (
        type(old)(value) if isinstance(old, int | float | str) else value)


@reports_errors
def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _VARIANTS.value:
    raise app.UsageError("give at least one --variant (an experiments/configs/automem.py variant)")
  plan = sweep_plan(_VARIANTS.value, _ROOT.value)

  def make_config(variant: str) -> ml_collections.ConfigDict:
    config = get_config(variant)
    override(config, _SET.value)
    return config

  configs = {e.variant: make_config(e.variant) for e in plan}  # bad variants fail before a run
  for e in plan:
    print(f"{e.variant:<50} {e.workdir}  (skip: {configs[e.variant].skip or '-'})")
  commands = cluster_commands(plan)
  print("\n# export CKPT=<checkpoint dir> (and TPU_NAME, ZONE for the TPU lines) first; "
        "launch/README.md")
  for kind, lines in commands.items():
    print(f"\n# one job per variant ({kind}):")
    print("\n".join(lines))
  if _DRY_RUN.value:
    return
  failed = []
  if not _COMPARE_ONLY.value:
    if any(c.eval.llm.backend == "local" for c in configs.values()):
      local_compile_cache()
    results = run_sweep(plan, lambda v: configs[v])
    for variant, r in results.items():
      print(f"{variant:<50} {'failed: ' + r['error'] if 'error' in r else 'done'}")
    failed = [v for v, r in results.items() if "error" in r]
  result = compare_workdirs(workdirs(plan), _ROOT.value, seed_set=_SEED_SET.value)
  print(comparison_markdown(result))
  print(f"comparison: {os.path.abspath(os.path.join(_ROOT.value, 'comparison.md'))}")
  if failed:  # the others ran and are compared; a rerun resumes the failed ones
    raise SystemExit(f"{len(failed)} variant(s) failed: {', '.join(failed)}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
