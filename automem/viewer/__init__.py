"""Trace viewer: a run directory in the browser, episode by episode, step by step.

Public API::

  export_run(run_dir, out_dir, chunk=50) -> index.html path   static, opens from disk
  ViewerServer(run_dir, cache_dir, port=0).start() / .url / .close()   served on 127.0.0.1
  export_episode(trajectory_path, data_dir, chunk), export_index(run_dir, data_dir)

Command line: `python -m automem.viewer RUN_DIR [--export=DIR]`.
"""

from automem.viewer.data import DEFAULT_CHUNK, export_episode, export_index, export_run
from automem.viewer.server import ViewerServer

__all__ = ["DEFAULT_CHUNK", "ViewerServer", "export_episode", "export_index", "export_run"]
