"""The report's figures (matplotlib, Agg): each saved as PNG and SVG."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _save(fig: Any, out_dir: str, name: str) -> list[str]:
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  for ext in ("png", "svg"):
    path = os.path.join(out_dir, f"{name}.{ext}")
    meta = {"Date": None} if ext == "svg" else None  # reproducible SVG files
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata=meta)
    paths.append(path)
  plt.close(fig)
  return paths


def progression_plot(table: Mapping[str, Sequence[Mapping[str, Any]]], out_dir: str) -> list[str]:
  """Mean progression per version with its 95% CI, one panel per game."""
  games = list(table)
  fig, axes = plt.subplots(1, max(len(games), 1), figsize=(4 * max(len(games), 1), 3.2),
                           squeeze=False)
  for ax, game in zip(axes[0], games):
    rows = [r for r in table[game] if not r.get("quoted")]
    x = range(len(rows))
    ax.bar(x, [r["progression_mean"] for r in rows],
           yerr=[r["progression_ci95"] for r in rows], capsize=4, color="#4c72b0")
    ax.set_xticks(list(x), [r["version"] for r in rows])
    ax.set_title(game)
    ax.set_ylabel("progression (%)")
  return _save(fig, out_dir, "progression")


def achievements_plot(rates: Mapping[str, Mapping[str, float]], names: Sequence[str],
                      out_dir: str) -> list[str]:
  """Crafter's per-achievement success rate, one bar group per achievement."""
  fig, ax = plt.subplots(figsize=(10, 3.4))
  versions = list(rates)
  width = 0.8 / max(len(versions), 1)
  for k, v in enumerate(versions):
    ax.bar([i + k * width for i in range(len(names))],
           [100 * rates[v].get(n, 0.0) for n in names], width, label=v)
  ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names, rotation=60, ha="right",
                fontsize=7)
  ax.set_ylabel("episodes (%)")
  ax.set_title("Crafter achievements")
  ax.legend(fontsize=7)
  return _save(fig, out_dir, "crafter_achievements")


def ops_plot(behaviour: Mapping[str, Sequence[Mapping[str, Any]]], out_dir: str) -> list[str]:
  """Memory commands per env step by op, per version (all games pooled)."""
  per_version: dict[str, dict[str, float]] = {}
  steps: dict[str, int] = {}
  for rows in behaviour.values():
    for r in rows:
      acc = per_version.setdefault(r["version"], {})
      steps[r["version"]] = steps.get(r["version"], 0) + r["steps"]
      for op, n in r["ops"].items():
        acc[op] = acc.get(op, 0) + n
  ops = sorted({op for acc in per_version.values() for op in acc})
  fig, ax = plt.subplots(figsize=(6, 3.2))
  bottom = [0.0] * len(per_version)
  labels = list(per_version)
  for op in ops:
    vals = [per_version[v].get(op, 0) / max(steps[v], 1) for v in labels]
    ax.bar(labels, vals, bottom=bottom, label=op)
    bottom = [b + v for b, v in zip(bottom, vals)]
  ax.set_ylabel("commands per env step")
  ax.set_title("Memory ops by kind")
  if ops:
    ax.legend(fontsize=7, ncol=2)
  return _save(fig, out_dir, "memory_ops")


def lineage_plot(lineage: Sequence[Mapping[str, Any]], out_dir: str) -> list[str]:
  """Loop 1's candidates in order: paired gain (and its CI when given), accepted in green."""
  fig, ax = plt.subplots(figsize=(6, 3.2))
  for i, rec in enumerate(lineage):
    race = (rec.get("stats") or {}).get("summary") or {}  # Loop 1's record: the race's gain
    gain = race.get("mean_gain", rec.get("gain", rec.get("diff_mean", 0.0)))
    err = race.get("gain_ci95", rec.get("ci95", rec.get("diff_ci95")))
    gain = 0.0 if gain is None or gain != gain else gain
    err = None if err is None or err != err else err
    accepted = rec.get("decision") == "accepted" or rec.get("accepted") is True
    ax.errorbar([i], [gain], yerr=[err] if err is not None else None, fmt="o",
                color="#2ca02c" if accepted else "#d62728")
  ax.axhline(0, color="grey", lw=0.8)
  if lineage:  # per-game runs of a pipeline's Loop 1 carry their game
    ax.set_xticks(range(len(lineage)))
    ax.set_xticklabels([" ".join(str(r[k]) for k in ("game", "candidate") if r.get(k)) or str(i)
                        for i, r in enumerate(lineage)], rotation=30, fontsize=7, ha="right")
  ax.set_xlabel("candidate")
  ax.set_ylabel("paired gain (progression)")
  ax.set_title("Loop 1 lineage (green: accepted)")
  return _save(fig, out_dir, "lineage")


def ledger_plot(ledger: Sequence[Mapping[str, Any]], out_dir: str) -> list[str]:
  """Loop 2's recipes: paired gain per recipe, and the training loss curves when recorded."""
  fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
  for i, rec in enumerate(ledger):
    a.bar([i], [rec.get("gain", rec.get("diff_mean", 0.0)) or 0.0],
          color="#2ca02c" if rec.get("accepted") else "#d62728")
    loss = rec.get("loss") or rec.get("train_loss")
    if isinstance(loss, list) and loss:
      b.plot(loss, label=str(rec.get("recipe", i)))
  a.set_title("Loop 2 recipes: paired gain")
  b.set_title("training loss")
  return _save(fig, out_dir, "ledger")
