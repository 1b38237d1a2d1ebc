"""A sweep: several pipeline variants, each in a sibling workdir, compared in one table.

Here the variants run one after another (`run_sweep`); on a cluster each is
one job (`cluster_commands` gives the SLURM and TPU-pod command lines, which
run the same `experiments.automem` into the same workdirs). A variant that
fails (e.g. a loop that raised) is recorded and the sweep goes on; a rerun
resumes every variant. `automem.report.compare_workdirs` then puts them side
by side.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections
from absl import logging

from automem.pipeline.stages import run_pipeline

CONFIG = "experiments/configs/automem.py"


@dataclasses.dataclass(frozen=True)
class SweepEntry:
  """One variant of the sweep and its workdir."""

  variant: str
  workdir: str


def variant_dirname(variant: str) -> str:
  """A workdir name for a variant string: "ablation=both,games=crafter" -> "ablation-both_games-crafter"."""
  name = re.sub(r"[^A-Za-z0-9_.-]+", "_", variant.replace("=", "-").replace(",", "__")).strip("_")
  return name or "default"


def sweep_plan(variants: Sequence[str], root: str) -> list[SweepEntry]:
  """The variants in order with their sibling workdirs under `root`; duplicates are an error."""
  if not variants:
    raise ValueError("a sweep needs at least one variant")
  entries = [SweepEntry(v, os.path.join(os.path.abspath(root), variant_dirname(v)))
             for v in variants]
  dirs = [e.workdir for e in entries]
  if len(set(dirs)) != len(dirs):
    raise ValueError(f"two variants map to the same workdir: {variants}")
  return entries


def cluster_commands(plan: Sequence[SweepEntry], *, config: str = CONFIG) -> dict[str, list[str]]:
  """One job per variant: `sbatch` lines (launch/slurm_automem.sbatch) and TPU-pod lines
  (launch/tpu_pod_automem.sh); both run `experiments.automem` into the plan's workdirs."""
  out: dict[str, list[str]] = {"slurm": [], "tpu_pod": []}
  for e in plan:
    spec = shlex.quote(f"{config}:{e.variant}")
    out["slurm"].append(f"sbatch --job-name=automem-{variant_dirname(e.variant)[:40]} "
                        f"launch/slurm_automem.sbatch {spec} {shlex.quote(e.workdir)}")
    out["tpu_pod"].append(f"launch/tpu_pod_automem.sh {spec} {shlex.quote(e.workdir)}")
  return out


def run_sweep(plan: Sequence[SweepEntry],
              make_config: Callable[[str], ml_collections.ConfigDict], **pipeline_kwargs: Any
              ) -> dict[str, dict[str, Any]]:
  """Runs every variant's pipeline in turn; returns {variant: {"workdir", "results" | "error"}}.

  `pipeline_kwargs` go to `run_pipeline` (tests inject clients and env factories).
  """
  out: dict[str, dict[str, Any]] = {}
  for i, e in enumerate(plan):
    logging.info("sweep %d/%d: %s -> %s", i + 1, len(plan), e.variant, e.workdir)
    try:
      results = run_pipeline(make_config(e.variant), e.workdir, **pipeline_kwargs)
    except Exception as err:  # one failed variant must not end the sweep
      logging.error("sweep variant %s failed: %s", e.variant, err)
      out[e.variant] = {"workdir": e.workdir, "error": f"{type(err).__name__}: {err}"}
      continue
    out[e.variant] = {"workdir": e.workdir, "results": results}
  return out


def workdirs(plan: Sequence[SweepEntry]) -> Mapping[str, str]:
  """{variant: workdir}, as `automem.report.compare_workdirs` takes it."""
  return {e.variant: e.workdir for e in plan}
