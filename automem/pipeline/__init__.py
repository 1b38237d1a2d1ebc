"""The AutoMem pipeline: v0 evaluation, Loop 1, Loop 2, final evaluation, report.

Public API::

  run_pipeline(config, workdir, stages=None, clients=None) -> {stage: summary}
  STAGES; set_loop("loop1" | "loop2", fn)      plug a loop in: fn(Context) -> summary
  read_summary(workdir, stage), summary_path(workdir, stage), stage_plan(config)
  loop1_stage(ctx), loop1_config(config, game)  Loop 1 (optimize_structure) per game
  loop2_stage(ctx), loop2_config(config, game)  Loop 2 (improve_proficiency) on one game
  sweep_plan(variants, root) -> [SweepEntry]; run_sweep(plan, make_config, **kw);
  cluster_commands(plan)                       several variants in sibling workdirs

Entry points: `python -m experiments.automem` (experiments/configs/automem.py),
`python -m experiments.sweep`.
"""

from automem.pipeline.loop1 import loop1_config, loop1_stage
from automem.pipeline.loop2 import loop2_config, loop2_stage
from automem.pipeline.stages import (
    STAGES,
    Context,
    read_summary,
    run_pipeline,
    set_loop,
    stage_plan,
    summary_path,
)
from automem.pipeline.sweep import SweepEntry, cluster_commands, run_sweep, sweep_plan

__all__ = ["STAGES", "Context", "SweepEntry", "cluster_commands", "loop1_config",
           "loop1_stage", "loop2_config", "loop2_stage", "read_summary", "run_pipeline", "run_sweep", "set_loop", "stage_plan",
           "summary_path", "sweep_plan"]
