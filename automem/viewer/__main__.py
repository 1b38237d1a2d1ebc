"""Trace viewer of a run directory.

  python -m automem.viewer RUN_DIR                 # serve on http://127.0.0.1:8765/
  python -m automem.viewer RUN_DIR --export=OUT    # static copy; open OUT/index.html from disk
"""

from __future__ import annotations

import os
import tempfile

from absl import app, flags

from automem.viewer.data import DEFAULT_CHUNK, export_run
from automem.viewer.server import ViewerServer

_PORT = flags.DEFINE_integer("port", 8765, "Port on 127.0.0.1 (0 = any free port).")
_EXPORT = flags.DEFINE_string("export", None, "Write a static viewer to this folder and exit.")
_CHUNK = flags.DEFINE_integer("chunk", DEFAULT_CHUNK, "Env steps per data file.")


def main(argv: list[str]) -> None:
  if len(argv) != 2:
    raise app.UsageError("usage: python -m automem.viewer RUN_DIR [--port=N | --export=DIR]")
  run_dir = argv[1]
  if not os.path.isdir(os.path.join(run_dir, "trajectories")):
    raise app.UsageError(f"{run_dir} is not a run directory (no trajectories/ folder)")
  if _EXPORT.value:
    print(f"viewer: {os.path.abspath(export_run(run_dir, _EXPORT.value, _CHUNK.value))}")
    return
  with tempfile.TemporaryDirectory(prefix="automem-viewer-") as cache:
    server = ViewerServer(run_dir, cache, port=_PORT.value, chunk=_CHUNK.value)
    print(f"viewer of {os.path.abspath(run_dir)}: {server.url}  (Ctrl-C to stop)", flush=True)
    try:
      server.serve_forever()
    except KeyboardInterrupt:
      pass
    finally:
      server.close()


if __name__ == "__main__":
  app.run(main)
