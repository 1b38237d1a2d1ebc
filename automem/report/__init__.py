"""The report: the paper's table per game, behavioural statistics, plots, HTML, TensorBoard.

Public API::

  find_versions(path) -> [Version]           a run dir, a dir of run dirs, a pipeline workdir
  build_report(versions, out_dir, seed_set="test", lineage=None, ledger=None) -> dict
  compare_workdirs({variant: workdir}, out_dir, seed_set="test") -> dict   a sweep's table
  Version(label, run_dir);  load_version(version, seed_set) -> VersionData
  version_table(data), behaviour_table(data), achievement_rates(data, game), reference_rows()
  episode_behaviour(trajectory) -> Behaviour   stuck/oscillating steps, redundant writes, ...
  traces: episodes(run_dir), episode_info(path), read_episode(path), iter_episode_records(path)
"""

from automem.report import traces
from automem.report.behaviour import Behaviour, episode_behaviour
from automem.report.build import build_report, find_versions, markdown
from automem.report.compare import compare_workdirs, comparison_markdown
from automem.report.tables import (
    Version,
    VersionData,
    achievement_rates,
    behaviour_table,
    load_version,
    reference_rows,
    version_table,
)

__all__ = [
    "Behaviour",
    "Version",
    "VersionData",
    "achievement_rates",
    "behaviour_table",
    "build_report",
    "compare_workdirs",
    "comparison_markdown",
    "episode_behaviour",
    "find_versions",
    "load_version",
    "markdown",
    "reference_rows",
    "traces",
    "version_table",
]
