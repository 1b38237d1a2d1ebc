"""Loop 1, structure optimisation: trace digests, proposers and reviewer, racing, lineage.

Public API::

  optimize_structure(config, workdir, clients=None, env_factory=None, proposer=None) -> summary
  StructureLoop(config, workdir, ...).run()      rounds, final test-seed table, A/A calibration
  ReviewContext, OfflineProposer                  what a proposer sees; the no-LLM baseline
  Proposal(changes, note, analysis, predicted_effects, proposer, transcript, base, continues)
  offline_proposals(structure, digest, k), continuation(...), merge(...)
  Rules, check_revision(parent, child, rules)     structural change, model-owned memory
  load_trace / load_run / memory_at               the one place that reads trajectories
  digest_episode, digest_run, render_digest       trace digests and recurring-failure clusters
  Evaluator, SeedDisciplineError, score           one ordinary eval run dir per (version, block)
  read_lineage, fold, pareto_front                the lineage and the state folded from it
  Reviewer, SingleShotReviewer, make_proposer     LLM reviewers (tool calling / JSON schema)

The racing statistics live in `automem.rollout.racing` (Loop 2 uses them too).
"""

from automem.structure.arms import Evaluator, SeedDisciplineError, score
from automem.structure.digest import digest_episode, digest_run, render_digest
from automem.structure.lineage import fold, pareto_front, read_lineage
from automem.structure.loop import OfflineProposer, ReviewContext, StructureLoop, optimize_structure
from automem.structure.proposer import Proposal, continuation, merge, offline_proposals
from automem.structure.reviewer import Budget, Reviewer, SingleShotReviewer, make_proposer
from automem.structure.rules import Rules, check_revision
from automem.structure.traces import load_run, load_trace, memory_at

__all__ = [
    "Budget",
    "Evaluator",
    "OfflineProposer",
    "Proposal",
    "ReviewContext",
    "Reviewer",
    "Rules",
    "SeedDisciplineError",
    "SingleShotReviewer",
    "StructureLoop",
    "check_revision",
    "continuation",
    "digest_episode",
    "digest_run",
    "fold",
    "load_run",
    "load_trace",
    "make_proposer",
    "memory_at",
    "merge",
    "offline_proposals",
    "optimize_structure",
    "pareto_front",
    "read_lineage",
    "render_digest",
    "score",
]
