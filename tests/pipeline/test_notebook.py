"""The notebook runs headless (nbclient) on a finished pipeline workdir."""

from __future__ import annotations

import os

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow

NOTEBOOK = os.path.join(os.path.dirname(__file__), "..", "..", "notebooks", "run_report.ipynb")


def test_notebook_runs_on_a_finished_run(pipeline_run, monkeypatch):
  workdir, _, _, _ = pipeline_run
  root = os.path.abspath(os.path.join(os.path.dirname(NOTEBOOK), ".."))
  monkeypatch.setenv("AUTOMEM_RUN_DIR", workdir)
  monkeypatch.setenv("PYTHONPATH", root + os.pathsep + os.environ.get("PYTHONPATH", ""))
  nb = nbformat.read(NOTEBOOK, as_version=4)
  NotebookClient(nb, timeout=120, kernel_name="python3",
                 resources={"metadata": {"path": root}}).execute()
  out = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", ()))
  assert "crafter   v0" in out and "crafter   v1" in out
  assert "0 lineage records, 0 ledger records" in out
  assert "replays exactly" in out
  assert any("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", ()))
