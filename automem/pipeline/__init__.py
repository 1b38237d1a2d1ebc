"""The AutoMem pipeline: v0 evaluation, Loop 1, Loop 2, final evaluation, report.

Public API::

  run_pipeline(config, workdir, stages=None, clients=None) -> {stage: summary}
  STAGES; set_loop("loop1" | "loop2", fn)      plug a loop in: fn(Context) -> summary
  NotAvailable                                 raised by a loop stage not plugged in yet
  read_summary(workdir, stage), summary_path(workdir, stage), stage_plan(config)

Entry point: `python -m experiments.automem` (experiments/configs/automem.py).
"""

from automem.pipeline.stages import (
    STAGES,
    Context,
    NotAvailable,
    read_summary,
    run_pipeline,
    set_loop,
    stage_plan,
    summary_path,
)

__all__ = ["STAGES", "Context", "NotAvailable", "read_summary", "run_pipeline", "set_loop",
           "stage_plan", "summary_path"]
