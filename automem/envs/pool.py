"""A pool of CPU worker processes hosting slot envs behind one batched `TextEnv`.

`EnvPool(factory, num_envs, num_workers)` starts `num_workers` processes; each
builds its share of the `num_envs` slots with `factory` (a picklable
zero-argument callable returning a slot env, see `automem.envs.slots`).

Workers are fresh interpreters (`python -c <bootstrap>`, talking over a socket
pair with `multiprocessing.connection`), not forks: the parent may hold JAX,
which must not be forked, and unlike multiprocessing's spawn they never
re-import the parent's `__main__` (an experiment entry point that pulls in
JAX, Flax and the model code), so a worker imports only its env and starts in
about a second. They run in their own process group, so a Ctrl-C in the
terminal reaches only the parent, which then shuts them down.

A batched `step` sends each worker the actions of its slots, then collects the
replies as they arrive (`step_async` / `step_wait` split the two, so a caller
can overlap its own work with the envs'). Faults cost only the episodes of the
worker that failed:

- a worker that dies (e.g. `kill -9`), hangs past `step_timeout_s`, or fails
  to start is killed and replaced by a fresh process; the episodes it held end
  with end reason "error" and the reason (those in the current request at once,
  the others at their next step); every other slot carries on;
- an exception in one slot env ends only that slot's episode ("error"); the
  worker rebuilds that env and keeps its other slots.

`close()` (also on `with` exit, garbage collection, interpreter exit, and any
exception or KeyboardInterrupt inside a pool call) stops and reaps every
worker, so no orphan or zombie processes are left. Workers exit by themselves
when the parent goes away, even if it is killed: at EOF on their socket, and
on Linux through the kernel's parent-death signal, which also ends a worker
stuck inside a step.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import weakref
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

from absl import logging

from automem.envs.base import ActionReader, Observation, StepResult, TextEnv
from automem.envs.slots import SlotBook, SlotFactory, slot_reader


def _die_with_parent(parent_pid: int) -> None:
  """Linux: have the kernel SIGKILL this process when its parent dies.

  A worker blocked in `recv` notices a dead parent by itself (EOF); this also
  covers one stuck inside a step when the parent is killed.
  """
  if not sys.platform.startswith("linux"):
    return
  with contextlib.suppress(Exception):
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
  if os.getppid() != parent_pid:  # the parent died before prctl took effect
    os._exit(0)


_TMP_PREFIX = "automem-env-worker"

# What a worker interpreter runs: take the parent's sys.path (so the factory's modules
# import as they do in the parent), then serve. argv[1] is the socket's fd.
_BOOTSTRAP = """
import pickle, sys
from multiprocessing.connection import Connection
conn = Connection(int(sys.argv[1]))
sys.path[:], parent_pid = pickle.loads(conn.recv_bytes())
from automem.envs.pool import _worker_main
_worker_main(conn, parent_pid)
"""


def _worker_main(conn: Connection, parent_pid: int | None) -> None:
  """Worker process: builds its slot envs, then serves requests until told to stop."""
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  if parent_pid is not None:
    _die_with_parent(parent_pid)
  envs: dict[int, Any] = {}
  try:
    factory, slots = pickle.loads(conn.recv_bytes())
    for s in slots:
      envs[s] = factory()
    first = envs[slots[0]]
    meta = {
        "game": first.game,
        "task": first.task,
        "action_names": tuple(first.action_names),
        "action_descriptions": dict(getattr(first, "action_descriptions", {})),
        "action_reader": slot_reader(first),
        "pid": os.getpid(),
    }
    conn.send(("ready", meta))
  except BaseException:  # reported to the parent, which replaces us
    with contextlib.suppress(Exception):
      conn.send(("fatal", traceback.format_exc(limit=8)))
    return
  try:
    while True:
      try:
        msg = conn.recv()
      except (EOFError, OSError):  # the parent is gone
        break
      if msg[0] == "close":
        break
      cmd, items = msg
      replies = []
      for slot, arg in items:
        try:
          if envs.get(slot) is None:
            envs[slot] = factory()
          out = envs[slot].reset(arg) if cmd == "reset" else envs[slot].step(arg)
          replies.append((slot, True, out))
        except Exception as e:  # costs only this slot's episode
          replies.append((slot, False, f"{cmd} raised {type(e).__name__}: {e}"))
          env, envs[slot] = envs.get(slot), None
          with contextlib.suppress(Exception):
            env.close()
      conn.send(("reply", replies))
  finally:
    for env in envs.values():
      with contextlib.suppress(Exception):
        if env is not None:
          env.close()
    # If the parent went away without stopping us, nobody else removes our TMPDIR.
    tmp = os.environ.get("TMPDIR", "")
    if os.path.basename(tmp).startswith(_TMP_PREFIX):
      shutil.rmtree(tmp, ignore_errors=True)


class _Worker:
  """Parent-side handle of one worker process."""

  def __init__(self, factory: SlotFactory, slots: list[int], index: int):
    self.slots = slots
    self.index = index
    payload = pickle.dumps((factory, slots))  # an unpicklable factory fails here, in the parent
    # The kernel's parent-death signal follows the thread that started the child, so
    # it is only armed for pools made on the main thread (a helper thread may end early).
    parent = os.getpid() if threading.current_thread() is threading.main_thread() else None
    # The worker's own TMPDIR (NLE copies its library into a temp dir per game), removed
    # when the worker is stopped, so even a killed worker leaves nothing behind.
    self.tmpdir = tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{index}-")
    ours, theirs = socket.socketpair()
    try:
      self.proc = subprocess.Popen(
          [sys.executable, "-c", _BOOTSTRAP, str(theirs.fileno())],
          pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, process_group=0,
          env={**os.environ, "TMPDIR": self.tmpdir},
      )
    except BaseException:
      ours.close()
      shutil.rmtree(self.tmpdir, ignore_errors=True)
      raise
    finally:
      theirs.close()
    self.conn = Connection(ours.detach())
    self.conn.send_bytes(pickle.dumps((list(sys.path), parent)))
    self.conn.send_bytes(payload)
    self.ready = False
    self.meta: dict[str, Any] | None = None

  @property
  def pid(self) -> int:
    return self.proc.pid

  def exitcode(self, wait_s: float = 1.0) -> int | None:
    """The exit status (negative: killed by that signal), None while running."""
    with contextlib.suppress(subprocess.TimeoutExpired):
      self.proc.wait(wait_s)
    return self.proc.returncode

  def stop(self, grace_s: float) -> None:
    """Asks the worker to exit, then escalates; always reaps the process."""
    if self.proc.poll() is None and grace_s > 0:
      with contextlib.suppress(Exception):
        self.conn.send(("close",))
      self.exitcode(grace_s)
    if self.proc.poll() is None:
      with contextlib.suppress(ProcessLookupError):
        self.proc.kill()
    self.exitcode(5.0)
    with contextlib.suppress(Exception):
      self.conn.close()
    shutil.rmtree(self.tmpdir, ignore_errors=True)


def _shutdown(workers: list[_Worker]) -> None:
  for w in workers:
    w.stop(grace_s=0)


class EnvPool(TextEnv):
  """`num_envs` slot envs spread over `num_workers` worker processes.

  Args:
    factory: picklable zero-argument callable that builds one slot env.
    num_envs: number of slots.
    num_workers: worker processes (at most `num_envs`); slots are split into
      contiguous, near-equal blocks.
    step_timeout_s: a worker that takes longer than this for one request
      (reset or step of its slots) is declared hung and replaced.
    start_timeout_s: how long a new worker may take to import and build its
      envs before it counts as failed.
  """

  def __init__(
      self,
      factory: SlotFactory,
      num_envs: int,
      num_workers: int = 1,
      *,
      step_timeout_s: float = 60.0,
      start_timeout_s: float = 300.0,
  ):
    if num_envs < 1 or num_workers < 1:
      raise ValueError(f"need num_envs >= 1 and num_workers >= 1, got {num_envs}, {num_workers}")
    num_workers = min(num_workers, num_envs)
    self._factory = factory
    self.step_timeout_s = float(step_timeout_s)
    self.start_timeout_s = float(start_timeout_s)
    bounds = [round(i * num_envs / num_workers) for i in range(num_workers + 1)]
    self._blocks = [list(range(bounds[i], bounds[i + 1])) for i in range(num_workers)]
    self._owner = {s: w for w, block in enumerate(self._blocks) for s in block}
    self._workers: list[_Worker] = []
    self._closed = False
    self._pending: tuple[list[StepResult | None], dict[int, str]] | None = None
    self.num_replaced = 0
    self.failures: list[str] = []
    self._finalizer = weakref.finalize(self, _shutdown, self._workers)
    try:
      for w in range(num_workers):
        self._workers.append(_Worker(factory, self._blocks[w], w))
      deadline = time.monotonic() + self.start_timeout_s
      for w in self._workers:
        self._await_ready(w, deadline)
    except BaseException:
      self.close()
      raise
    meta = self._workers[0].meta
    self.game = meta["game"]
    self.task = meta["task"]
    self._names = meta["action_names"]
    self.action_descriptions = meta["action_descriptions"]
    self._reader = meta["action_reader"]
    self._book = SlotBook(num_envs, self.game, self.task)

  # -- TextEnv ----------------------------------------------------------------

  @property
  def num_envs(self) -> int:
    return len(self._owner)

  @property
  def action_names(self) -> tuple[str, ...]:
    return self._names

  @property
  def action_reader(self) -> ActionReader:
    return self._reader

  @property
  def num_workers(self) -> int:
    return len(self._workers)

  @property
  def worker_pids(self) -> list[int | None]:
    return [w.pid for w in self._workers]

  def worker_of(self, slot: int) -> int:
    """Index of the worker that hosts `slot`."""
    return self._owner[slot]

  def reset(self, seeds: Sequence[int], indices: Sequence[int] | None = None) -> list[Observation]:
    self._check_open()
    if self._pending is not None:
      raise RuntimeError("reset() while a step_async is pending; call step_wait() first")
    idx = self._book.check_reset_args(seeds, indices)
    seed_of = dict(zip(idx, (int(s) for s in seeds)))
    with self._guard():
      replies, failed = self._request("reset", seed_of)
      out = []
      for slot in idx:
        seed = seed_of[slot]
        if slot in replies and replies[slot][0]:
          self._book.started(slot, seed, replies[slot][1])
          out.append(replies[slot][1])
        else:
          reason = replies[slot][1] if slot in replies else failed[slot]
          out.append(self._book.failed_reset(slot, seed, reason))
      return out

  def step(self, actions: Sequence[str | None]) -> list[StepResult | None]:
    self.step_async(actions)
    return self.step_wait()

  def step_async(self, actions: Sequence[str | None]) -> None:
    """Sends a batched step to the workers without waiting for the results."""
    self._check_open()
    if self._pending is not None:
      raise RuntimeError("step_async called twice without step_wait")
    results, todo = self._book.triage(actions)  # bad input raises here, losing nothing
    with self._guard():
      self._pending = (results, {s: actions[s] for s in todo})
      self._sent = self._send("step", self._pending[1])

  def step_wait(self) -> list[StepResult | None]:
    """Collects the results of the last `step_async`."""
    if self._pending is None:
      raise RuntimeError("step_wait called without step_async")
    results, todo = self._pending
    with self._guard():
      try:
        replies, failed = self._collect(*self._sent)
      finally:
        self._pending = None
      for slot in todo:
        if slot in replies:
          ok, payload = replies[slot]
          results[slot] = self._book.record(slot, payload) if ok else self._book.error(slot, payload)
        else:
          results[slot] = self._book.error(slot, failed[slot])
      return results

  def close(self) -> None:
    """Stops and reaps every worker. Idempotent."""
    if self._closed:
      return
    self._closed = True
    for w in self._workers:
      w.stop(grace_s=2.0)
    self._finalizer.detach()

  # -- internals --------------------------------------------------------------

  def _check_open(self) -> None:
    if self._closed:
      raise RuntimeError("the env pool is closed")

  @contextlib.contextmanager
  def _guard(self):
    """Closes the pool (killing workers) if a call is interrupted midway."""
    try:
      yield
    except BaseException:
      self.close()
      raise

  def _await_ready(self, w: _Worker, deadline: float) -> None:
    """Waits for a new worker's handshake; raises if it cannot start."""
    if not w.conn.poll(max(0.0, deadline - time.monotonic())):
      raise RuntimeError(f"env worker {w.index} did not start within {self.start_timeout_s:.0f}s")
    try:
      msg = w.conn.recv()
    except (EOFError, OSError):
      raise RuntimeError(
          f"env worker {w.index} exited during start-up (exit code {w.exitcode()}); its stderr says why"
      ) from None
    if msg[0] != "ready":
      last = msg[1].strip().splitlines()[-1]
      raise RuntimeError(f"env worker {w.index} failed to build its envs: {last}\n{msg[1]}")
    w.ready, w.meta = True, msg[1]

  def _request(self, cmd: str, args: dict[int, Any]):
    return self._collect(*self._send(cmd, args))

  def _send(self, cmd: str, args: dict[int, Any]):
    """Sends each involved worker its items; returns what `_collect` needs."""
    per_worker: dict[int, list] = {}
    for slot, arg in args.items():
      per_worker.setdefault(self._owner[slot], []).append((slot, arg))
    now = time.monotonic()
    waiting: dict[int, tuple[float, list[int]]] = {}  # worker -> (deadline, its slots asked)
    failed: dict[int, str] = {}
    for w_index, items in per_worker.items():
      w = self._workers[w_index]
      try:
        w.conn.send((cmd, items))
      except (OSError, ValueError) as e:
        code = w.exitcode()
        reason = f"env worker {w_index} died (exit code {code})" if code is not None else f"env worker {w_index} could not be reached ({e})"
        self._replace(w_index, reason, [s for s, _ in items], failed)
        continue
      budget = self.step_timeout_s + (0.0 if w.ready else self.start_timeout_s)
      waiting[w_index] = (now + budget, [s for s, _ in items])
    return waiting, failed

  def _collect(self, waiting: dict[int, tuple[float, list[int]]], failed: dict[int, str]):
    """Gathers replies as they arrive; replaces dead or hung workers."""
    replies: dict[int, tuple[bool, Any]] = {}
    while waiting:
      conns = {self._workers[w].conn: w for w in waiting}
      timeout = max(0.0, min(t for t, _ in waiting.values()) - time.monotonic())
      for conn in wait(list(conns), timeout):
        w_index = conns[conn]
        w = self._workers[w_index]
        try:
          msg = conn.recv()
        except (EOFError, OSError):
          code = w.exitcode()
          self._replace(w_index, f"env worker {w_index} died (exit code {code})", waiting.pop(w_index)[1], failed)
          continue
        if msg[0] == "ready":
          w.ready, w.meta = True, msg[1]
          continue
        if msg[0] == "fatal":
          reason = f"env worker {w_index} failed to start: {msg[1].strip().splitlines()[-1]}"
          self._replace(w_index, reason, waiting.pop(w_index)[1], failed)
          continue
        for slot, ok, payload in msg[1]:
          replies[slot] = (ok, payload)
        waiting.pop(w_index)
      now = time.monotonic()
      for w_index in [w for w, (t, _) in waiting.items() if t <= now]:
        reason = f"env worker {w_index} hung (no reply within {self.step_timeout_s:.0f}s)"
        self._replace(w_index, reason, waiting.pop(w_index)[1], failed)
    return replies, failed

  def _replace(self, w_index: int, reason: str, slots: Sequence[int], failed: dict[int, str]) -> None:
    """Kills a worker, starts a fresh one for its slots, and records the losses.

    `slots` are those of the current request (they fail now, into `failed`); the
    worker's other running episodes are marked lost and end at their next step.
    """
    logging.warning("%s; replacing it", reason)
    self.failures.append(reason)
    self.num_replaced += 1
    old = self._workers[w_index]
    old.stop(grace_s=0)
    self._workers[w_index] = _Worker(self._factory, old.slots, w_index)
    for s in slots:
      failed[s] = reason
    self._book.lose_running([s for s in old.slots if s not in slots], reason)


def host_slots(factory: SlotFactory, num_envs: int, num_workers: int | None = None, **pool_kwargs: Any) -> TextEnv:
  """Hosts `num_envs` slot envs: in worker processes, or in-process when `num_workers == 0`.

  `num_workers=None` uses one worker per CPU core, at most one per slot.
  """
  from automem.envs.slots import SerialEnv

  if num_workers == 0:
    if pool_kwargs:
      raise ValueError(f"pool options {sorted(pool_kwargs)} need num_workers >= 1")
    return SerialEnv(factory, num_envs)
  if num_workers is None:
    num_workers = min(num_envs, os.cpu_count() or 1)
  return EnvPool(factory, num_envs, num_workers, **pool_kwargs)
