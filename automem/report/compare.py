"""One table comparing several pipeline workdirs (a sweep's variants) side by side.

Per game, one row per (variant, version): n, progression mean and 95% CI on the
report's seed set, the paired difference against the variant's own v0, and the
fallback rate. A workdir with no finished version yet is listed as not run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from automem.report.build import _clean, _md_table, find_versions
from automem.report.tables import load_version, version_table

COLUMNS = ("variant", "version", "n", "errors", "progression_mean", "progression_ci95",
           "vs_v0_pairs", "vs_v0_diff_mean", "vs_v0_diff_ci95", "fallback_rate")


def compare_workdirs(workdirs: Mapping[str, str], out_dir: str, *,
                     seed_set: str = "test") -> dict[str, Any]:
  """Compares pipeline workdirs ({variant label: workdir}); writes comparison.json/.md.

  Returns:
    {"games": {game: [row]}, "missing": [variant labels with nothing to compare yet]}.
  """
  games: dict[str, list[dict[str, Any]]] = {}
  missing = []
  for label, workdir in workdirs.items():
    versions = find_versions(workdir) if os.path.isdir(workdir) else []
    data = [d for d in (load_version(v, seed_set) for v in versions) if d.infos]
    if not data:
      missing.append(label)
      continue
    base = data[0].version.label
    for game, rows in version_table(data).items():
      for row in rows:
        out = {"variant": label, "workdir": os.path.abspath(workdir), **row}
        for key in ("pairs", "diff_mean", "diff_ci95"):
          if f"vs_{base}_{key}" in row:
            out[f"vs_v0_{key}"] = out.pop(f"vs_{base}_{key}")
        games.setdefault(game, []).append(out)
  result = _clean({"games": games, "missing": missing, "seed_set": seed_set})
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "comparison.json"), "w", encoding="utf-8") as f:
    json.dump(result, f, indent=1)
  with open(os.path.join(out_dir, "comparison.md"), "w", encoding="utf-8") as f:
    f.write(comparison_markdown(result))
  return result


def comparison_markdown(result: Mapping[str, Any]) -> str:
  """The comparison as Markdown: one table per game, then the variants not run yet."""
  lines = [f"# Sweep comparison (seed set {result['seed_set'] or 'all'})"]
  for game, rows in result["games"].items():
    lines += [f"\n## {game}\n", *_md_table(COLUMNS, rows)]
  if result["missing"]:
    lines.append(f"\nNot run yet: {', '.join(result['missing'])}")
  return "\n".join(lines) + "\n"
