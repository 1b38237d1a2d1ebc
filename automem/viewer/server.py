"""`python -m automem.viewer RUN_DIR`: the viewer served on 127.0.0.1.

The episodes list is built at start; an episode's data files are written to a
cache folder the first time the page asks for them (one pass over its
trajectory, a chunk at a time), so opening a large run is quick and a 100k-step
episode is never held in memory.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import threading
import urllib.parse

from absl import logging

from automem.report import traces
from automem.viewer.data import DEFAULT_CHUNK, export_episode, export_index
from automem.viewer.page import write_page

_EPISODE_PATH = re.compile(r"^/data/ep/([^/]+)/")


class ViewerServer:
  """A threaded HTTP server over `cache_dir`, exporting episodes of `run_dir` on demand."""

  def __init__(self, run_dir: str, cache_dir: str, *, host: str = "127.0.0.1", port: int = 0,
               chunk: int = DEFAULT_CHUNK):
    if not traces.is_run_dir(run_dir):
      raise ValueError(f"{run_dir} is not a run directory (no trajectories/ folder)")
    self.run_dir, self.cache_dir, self.chunk = os.path.abspath(run_dir), cache_dir, chunk
    write_page(cache_dir)
    export_index(run_dir, os.path.join(cache_dir, "data"))
    self._done: set[str] = set()
    self._lock = threading.Lock()
    handler = functools.partial(_Handler, self, directory=cache_dir)
    self.httpd = http.server.ThreadingHTTPServer((host, port), handler)
    self.requests = 0

  @property
  def url(self) -> str:
    host, port = self.httpd.server_address[:2]
    return f"http://{host}:{port}/index.html"

  def ensure_episode(self, episode: str) -> None:
    path = os.path.join(self.run_dir, "trajectories", f"{episode}.jsonl")
    with self._lock:
      if episode in self._done or not os.path.isfile(path):
        return
      export_episode(path, os.path.join(self.cache_dir, "data"), self.chunk)
      self._done.add(episode)

  def serve_forever(self) -> None:
    logging.info("viewer of %s at %s", self.run_dir, self.url)
    self.httpd.serve_forever()

  def start(self) -> threading.Thread:
    """Serves in a daemon thread (tests, notebooks); `close()` stops it."""
    t = threading.Thread(target=self.httpd.serve_forever, daemon=True)
    t.start()
    return t

  def close(self) -> None:
    self.httpd.shutdown()
    self.httpd.server_close()


class _Handler(http.server.SimpleHTTPRequestHandler):
  def __init__(self, viewer: ViewerServer, *args, **kwargs):
    self.viewer = viewer
    super().__init__(*args, **kwargs)

  def do_GET(self) -> None:
    self.viewer.requests += 1
    m = _EPISODE_PATH.match(urllib.parse.unquote(urllib.parse.urlsplit(self.path).path))
    if m and "/" not in m.group(1) and m.group(1) not in (".", ".."):
      self.viewer.ensure_episode(m.group(1))
    super().do_GET()

  def log_message(self, format: str, *args) -> None:
    logging.debug("viewer: " + format, *args)
