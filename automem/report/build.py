"""Builds the report directory: report.json, report.md, report.html, plots/, tb/.

Inputs are ordinary run directories (one per version); Loop 1's
`lineage.jsonl` and Loop 2's `ledger.jsonl` are optional and plotted when
found. `find_versions` turns a path into versions: a run directory is one
version; a directory of run directories gives one version per subdirectory
(v0 first, then by name); a pipeline workdir gives `v0` and `final/*`.
"""

from __future__ import annotations

import base64
import glob
import html
import json
import math
import os
import re
from collections.abc import Sequence
from typing import Any

from absl import logging

from automem.report import plots, traces
from automem.report.tables import (
    Version,
    VersionData,
    achievement_rates,
    behaviour_table,
    fmt,
    load_version,
    reference_rows,
    version_table,
)


def _version_order(name: str) -> tuple[int, str]:
  return (0 if name == "v0" else 1, name)


def find_versions(path: str) -> list[Version]:
  """The versions under `path` (see the module docstring); [] when there are none."""
  path = os.path.abspath(path)
  if traces.is_run_dir(path):
    return [Version(os.path.basename(path) or "v0", path)]

  def runs(root: str) -> list[Version]:
    if not os.path.isdir(root):
      return []
    names = sorted((n for n in os.listdir(root) if traces.is_run_dir(os.path.join(root, n))),
                   key=_version_order)
    return [Version(n, os.path.join(root, n)) for n in names]

  final = os.path.join(path, "final")
  if os.path.isdir(final):  # a pipeline workdir: v0, then the final versions
    v0 = os.path.join(path, "v0")
    return ([Version("v0", v0)] if traces.is_run_dir(v0) else []) + runs(final)
  return runs(path)


def _find_jsonl(roots: Sequence[str], name: str) -> list[dict[str, Any]]:
  """The first `name` under a root (itself, loop1/ or loop2/), else the per-game files of a
  pipeline's loops (`loop1/<game>/name`, `loop2/<game>/name`), concatenated and tagged with
  their game."""
  for root in roots:
    for cand in (os.path.join(root, name), os.path.join(root, "loop1", name),
                 os.path.join(root, "loop2", name)):
      if os.path.exists(cand):
        return traces.read_jsonl(cand)
    per_game = sorted(glob.glob(os.path.join(root, "loop1", "*", name))
                      + glob.glob(os.path.join(root, "loop2", "*", name)))
    if per_game:
      return [{"game": os.path.basename(os.path.dirname(p)), **rec}
              for p in per_game for rec in traces.read_jsonl(p)]
  return []


def _clean(x: Any) -> Any:
  """NaN -> None, recursively (strict JSON)."""
  if isinstance(x, float) and math.isnan(x):
    return None
  if isinstance(x, dict):
    return {k: _clean(v) for k, v in x.items()}
  if isinstance(x, list | tuple):
    return [_clean(v) for v in x]
  return x


def build_report(versions: Sequence[Version], out_dir: str, *, seed_set: str = "test",
                 lineage: Sequence[dict[str, Any]] | None = None,
                 ledger: Sequence[dict[str, Any]] | None = None,
                 search_roots: Sequence[str] = ()) -> dict[str, Any]:
  """Computes every table and figure of `versions` and writes them to `out_dir`.

  Args:
    versions: the rows, baseline first.
    out_dir: the report directory (created).
    seed_set: only episodes of this named seed set ("" = all).
    lineage, ledger: Loop 1 / Loop 2 records; None = look for `lineage.jsonl` /
      `ledger.jsonl` under `search_roots` (absent files are fine).
  Returns:
    The report's data (what `report.json` holds).
  """
  if not versions:
    raise ValueError("no versions to report on: give run directories (each with trajectories/)")
  data: list[VersionData] = [load_version(v, seed_set) for v in versions]
  if not any(d.infos for d in data):
    raise ValueError(f"no finished episodes of seed set {seed_set!r} in "
                     f"{', '.join(v.run_dir for v in versions)} (try --seed_set='')")
  lineage = list(lineage) if lineage is not None else _find_jsonl(search_roots, "lineage.jsonl")
  ledger = list(ledger) if ledger is not None else _find_jsonl(search_roots, "ledger.jsonl")
  table = version_table(data)
  refs = reference_rows()
  behaviour = behaviour_table(data)
  plot_dir = os.path.join(out_dir, "plots")
  figures = {"progression": plots.progression_plot(table, plot_dir),
             "memory_ops": plots.ops_plot(behaviour, plot_dir)}
  achievements = {}
  if "crafter" in table:
    from automem.envs import CRAFTER_ACHIEVEMENTS

    achievements = achievement_rates(data, "crafter")
    figures["crafter_achievements"] = plots.achievements_plot(
        achievements, list(CRAFTER_ACHIEVEMENTS), plot_dir)
  if lineage:
    figures["lineage"] = plots.lineage_plot(lineage, plot_dir)
  if ledger:
    figures["ledger"] = plots.ledger_plot(ledger, plot_dir)
  report = _clean({
      "seed_set": seed_set,
      "versions": [{"label": v.label, "run_dir": v.run_dir} for v in versions],
      "table": table, "references": {g: refs.get(g, []) for g in table},
      "behaviour": behaviour, "crafter_achievements": achievements,
      "lineage": lineage, "ledger": ledger,
      "figures": {k: [os.path.relpath(p, out_dir) for p in v] for k, v in figures.items()},
  })
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "report.json"), "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2, sort_keys=True)
  md = markdown(report)
  with open(os.path.join(out_dir, "report.md"), "w", encoding="utf-8") as f:
    f.write(md)
  with open(os.path.join(out_dir, "report.html"), "w", encoding="utf-8") as f:
    f.write(_html(report, md, out_dir))
  _tensorboard(report, os.path.join(out_dir, "tb"))
  logging.info("report written to %s", out_dir)
  return report


_TABLE_COLS = ("version", "n", "errors", "progression_mean", "progression_ci95", "fallback_rate")
_QUOTED_COLS = ("version", "kind", "n", "progression_mean", "progression_se", "source")
_BEHAVIOUR_COLS = ("version", "steps", "stuck_rate", "oscillating_rate", "redundant_write_rate",
                   "empty_search_rate", "context_tokens_per_step", "ops_per_step", "fallback_rate")


def _md_table(cols: Sequence[str], rows: Sequence[dict[str, Any]]) -> list[str]:
  out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
  out += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
  return out


def _quoted_cells(ref: dict[str, Any]) -> dict[str, Any]:
  """A quoted row for its table: marked in its name, its source a Markdown link (the setting,
  i.e. where in the source, as the link's title)."""
  url = ref["source"]
  label = re.sub(r"^https?://(www\.)?", "", url).split("/")[0]
  if label == "github.com":  # the repository, not the host
    label = "/".join(url.split("/")[3:5])
  title = ref.get("setting", "").replace('"', "'")
  link = f'[{label}]({url} "{title}")' if title else f"[{label}]({url})"
  return {**ref, "version": f"{ref['version']} (quoted)", "source": link}


def markdown(report: dict[str, Any]) -> str:
  """The report's tables as Markdown."""
  base = report["versions"][0]["label"]
  diff = (f"vs_{base}_pairs", f"vs_{base}_diff_mean", f"vs_{base}_diff_ci95")
  lines = [f"# AutoMem report\n\nSeed set: `{report['seed_set'] or 'all'}`. Progression in %, "
           f"mean ± 95% CI half-width; paired differences against `{base}` on the same "
           "(task, seed). Rows marked (quoted) are numbers reported elsewhere, not measured "
           "here: their ± is the standard error their source gives, and they take no part in "
           "the paired differences.\n"]
  for game, rows in report["table"].items():
    lines.append(f"\n## {game}\n")
    lines += _md_table((*_TABLE_COLS, *diff), rows)
    if report["references"].get(game):
      lines.append("\nQuoted, not measured here (hover a source for where in it):\n")
      lines += _md_table(_QUOTED_COLS, [_quoted_cells(r) for r in report["references"][game]])
    lines.append("\nBehaviour:\n")
    lines += _md_table(_BEHAVIOUR_COLS, report["behaviour"].get(game, []))
    ops = {r["version"]: r["ops"] for r in report["behaviour"].get(game, [])}
    lines.append("\nMemory ops by kind: " + "; ".join(
        f"{v}: " + (", ".join(f"{k} {n}" for k, n in o.items()) or "none") for v, o in ops.items()))
  for key, title in (("lineage", "Loop 1 lineage"), ("ledger", "Loop 2 ledger")):
    lines.append(f"\n## {title}\n\n" + (f"{len(report[key])} records (see the plot)."
                                        if report[key] else "not available for this run."))
  return "\n".join(lines) + "\n"


# A Markdown link [text](url "title") after HTML escaping (quotes are &quot; by then).
_LINK = re.compile(r"\[([^\]]+)\]\((https?://[^\s)]+)(?: &quot;(.*?)&quot;)?\)")


def _md_html(md: str) -> str:
  """The report's Markdown (headings, pipe tables, paragraphs, links) as HTML; nothing else
  occurs."""
  out: list[str] = []
  table: list[list[str]] = []

  def inline(text: str) -> str:
    text = re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text))
    return _LINK.sub(lambda m: f'<a href="{m[2]}"' + (f' title="{m[3]}"' if m[3] else "")
                     + f">{m[1]}</a>", text)

  def flush() -> None:
    if table:
      head, *body = table
      out.append("<table><thead><tr>" + "".join(f"<th>{inline(c)}</th>" for c in head)
                 + "</tr></thead><tbody>" + "".join(
                     "<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>"
                     for row in body) + "</tbody></table>")
      table.clear()

  for line in md.splitlines():
    if line.startswith("|"):
      cells = [c.strip() for c in line.strip().strip("|").split("|")]
      if not all(set(c) <= {"-", ":"} for c in cells):  # skip the separator row
        table.append(cells)
      continue
    flush()
    if line.startswith("#"):
      level = len(line) - len(line.lstrip("#"))
      out.append(f"<h{level}>{inline(line[level:].strip())}</h{level}>")
    elif line.strip():
      out.append(f"<p>{inline(line)}</p>")
  flush()
  return "\n".join(out)


def _html(report: dict[str, Any], md: str, out_dir: str) -> str:
  """One self-contained page: the tables as HTML tables and the figures inline."""
  figs = []
  for name, paths in report["figures"].items():
    png = next(p for p in paths if p.endswith(".png"))
    with open(os.path.join(out_dir, png), "rb") as f:
      data = base64.b64encode(f.read()).decode()
    figs.append(f'<figure><img alt="{name}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(name)}</figcaption></figure>")
  return ("<!doctype html><html><head><meta charset='utf-8'><title>AutoMem report</title>"
          "<style>body{font-family:sans-serif;max-width:1100px;margin:auto;padding:0 12px}"
          "table{border-collapse:collapse;margin:8px 0;font-size:13px}"
          "th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}"
          "th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}"
          "img{max-width:100%}</style>"
          f"</head><body><div id='tables'>{_md_html(md)}</div>{''.join(figs)}"
          "</body></html>\n")


def _tensorboard(report: dict[str, Any], tb_dir: str) -> None:
  """The same figures as TensorBoard scalars, one step per version."""
  from tensorboardX import SummaryWriter

  writer = SummaryWriter(tb_dir)
  try:
    for game, rows in report["table"].items():
      for step, r in enumerate(rows):
        for key in ("progression_mean", "progression_ci95", "fallback_rate"):
          if r.get(key) is not None:
            writer.add_scalar(f"{game}/{key}", r[key], step)
      for step, r in enumerate(report["behaviour"].get(game, [])):
        for key in ("stuck_rate", "oscillating_rate", "redundant_write_rate",
                    "empty_search_rate", "context_tokens_per_step"):
          writer.add_scalar(f"{game}/behaviour/{key}", r[key], step)
  finally:
    writer.close()
