"""A real two-node Ray cluster on 127.0.0.1 for tests: a head and a second node, each its own
`ray start` process tree with one CPU and a small object store.

Each node is started in a new session, so teardown kills exactly the processes
it started (the node's process group, plus any descendants that left it),
never other Ray processes on the machine. Workers inherit this process's
environment (PYTHONPATH gets the repo root, so they import `automem`; the JAX
compile cache and XLA flags come along).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

from tests.support.llm_server import free_port

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RAY = os.path.join(os.path.dirname(sys.executable), "ray")
COMMON = ["--num-cpus=1", "--object-store-memory=80000000", "--disable-usage-stats"]


def _children() -> dict[int, list[int]]:
  out: dict[int, list[int]] = {}
  for name in os.listdir("/proc"):
    if not name.isdigit():
      continue
    try:
      with open(f"/proc/{name}/stat", encoding="utf-8") as f:
        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
      continue
    out.setdefault(ppid, []).append(int(name))
  return out


def _group(pgid: int) -> list[int]:
  """Processes of process group `pgid` and all their descendants."""
  members = []
  for name in os.listdir("/proc"):
    if name.isdigit():
      try:
        if os.getpgid(int(name)) == pgid:
          members.append(int(name))
      except OSError:
        continue
  children, seen, todo = _children(), set(), list(members)
  while todo:
    pid = todo.pop()
    if pid not in seen:
      seen.add(pid)
      todo.extend(children.get(pid, []))
  return sorted(seen)


class RayTestCluster:
  """`with RayTestCluster(tmp) as c: ... c.address ...`: head + one more node."""

  def __init__(self, temp_dir: str, timeout_s: float = 90.0):
    self.temp_dir = temp_dir
    self.timeout_s = timeout_s
    self.port = free_port()
    self.address = f"127.0.0.1:{self.port}"
    self._groups: list[int] = []
    self.env = dict(os.environ)
    self.env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)
    cache = os.environ.get("AUTOMEM_TEST_JAX_CACHE")
    if cache:
      self.env["JAX_COMPILATION_CACHE_DIR"] = cache
      self.env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"

  def _start(self, args: list[str]) -> None:
    proc = subprocess.Popen([RAY, "start", *args, *COMMON], env=self.env, cwd=REPO,
                            start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    self._groups.append(proc.pid)  # the session's (and group's) id is the leader's pid
    try:
      out, _ = proc.communicate(timeout=self.timeout_s)
    except subprocess.TimeoutExpired:
      self.close()
      raise
    if proc.returncode != 0:
      self.close()
      raise RuntimeError(f"ray start {' '.join(args)} failed:\n{out}")

  def start(self) -> RayTestCluster:
    self._start(["--head", "--node-ip-address=127.0.0.1", f"--port={self.port}",
                 "--include-dashboard=false", f"--temp-dir={self.temp_dir}"])
    self._start([f"--address={self.address}", "--node-ip-address=127.0.0.1"])
    return self

  def node_pids(self) -> list[int]:
    return [p for g in self._groups for p in _group(g)]

  def close(self) -> None:
    """Kills both nodes' processes (by id) and waits until they are gone."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
      pids = self.node_pids()
      if not pids:
        break
      for pid in pids:
        with contextlib.suppress(OSError):
          os.kill(pid, signal.SIGKILL)
      time.sleep(0.2)
    self._groups.clear()

  def __enter__(self) -> RayTestCluster:
    return self.start()

  def __exit__(self, *exc) -> None:
    self.close()
