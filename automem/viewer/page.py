"""The viewer's page (static HTML, CSS and JavaScript shipped in `static/`)."""

from __future__ import annotations

import os
import shutil

STATIC_DIR = os.path.join(os.path.dirname(__file__), "static")
PAGE_FILES = ("index.html", "viewer.js", "viewer.css")


def write_page(out_dir: str) -> None:
  """Copies the page files next to a `data/` folder."""
  os.makedirs(out_dir, exist_ok=True)
  for name in PAGE_FILES:
    shutil.copyfile(os.path.join(STATIC_DIR, name), os.path.join(out_dir, name))
