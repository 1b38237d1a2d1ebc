"""The worker pool on real MiniHack: pipelined steps, faults, clean shutdown."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from automem.envs.minihack import minihack_slot_factory
from automem.envs.nle_env import NLESlotEnv
from automem.envs.pool import EnvPool
from automem.envs.slots import SerialEnv
from tests.support.faulty_env import faulty_factory

SEEDS = [10, 11, 12, 13]
MOVES = ["east", "south", "west", "north", "search", "southeast"]


def _our_children() -> set[int]:
  """Child processes, minus multiprocessing's own resource tracker (a shared singleton)."""
  out = set()
  for p in psutil.Process().children(recursive=True):
    try:
      if "resource_tracker" not in " ".join(p.cmdline()):
        out.add(p.pid)
    except psutil.NoSuchProcess:
      pass
  return out


def _gone(pid: int) -> bool:
  """Neither running nor a zombie (a zombie still has its pid)."""
  return not psutil.pid_exists(pid)


def _wait_until_dead(pid: int, limit_s: float = 60.0) -> None:
  """Polls until `pid` has stopped running (gone or a zombie); no fixed sleep."""
  deadline = time.monotonic() + limit_s
  while time.monotonic() < deadline:
    try:
      if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
        return
    except psutil.NoSuchProcess:
      return
    time.sleep(0.005)
  raise AssertionError(f"process {pid} still running after {limit_s} s")


@pytest.fixture(scope="module")
def pool():
  p = EnvPool(faulty_factory(), num_envs=4, num_workers=2, step_timeout_s=4.0)
  yield p
  p.close()


def test_pool_matches_in_process_peer(pool):
  peer = SerialEnv(minihack_slot_factory("Corridor-R3"), 4)
  try:
    assert pool.action_names == peer.action_names
    assert [o.text for o in pool.reset(SEEDS)] == [o.text for o in peer.reset(SEEDS)]
    for i, move in enumerate(MOVES):
      actions = [move, None if i % 2 else move, move, "bogus"]
      got, want = pool.step(actions), peer.step(actions)
      assert (got[1] is None) == (want[1] is None) == bool(i % 2)
      for g, w in zip(got, want):
        if g is not None:
          assert (g.observation.text, g.reward, g.done, g.valid_action, g.stats) == (
              w.observation.text, w.reward, w.done, w.valid_action, w.stats)
  finally:
    peer.close()


def test_step_async_then_wait(pool):
  pool.reset(SEEDS)
  pool.step_async(["east"] * 4)
  with pytest.raises(RuntimeError, match="twice"):
    pool.step_async(["east"] * 4)
  results = pool.step_wait()
  assert all(r.valid_action and r.stats.length == 1 for r in results)


def test_bad_calls_are_clear_errors(pool):
  with pytest.raises(ValueError, match="expected 4 actions"):
    pool.step(["east"])
  with pytest.raises(ValueError, match="out of range"):
    pool.reset([1], indices=[9])
  fresh = SerialEnv(minihack_slot_factory("Corridor-R3"), 2)
  fresh.reset([1], indices=[0])
  with pytest.raises(RuntimeError, match=r"slots \[1\] were stepped before they were reset"):
    fresh.step(["east", "east"])
  assert fresh.step(["east", None])[0].stats.length == 1  # the failed call changed nothing
  fresh.close()


def _check_failure(pool, fault, reason):
  pool.reset(SEEDS)
  victim = 0
  sibling = 1  # same worker as slot 0
  assert pool.worker_of(victim) == pool.worker_of(sibling) != pool.worker_of(2)
  old_pid = pool.worker_pids[pool.worker_of(victim)]
  results = pool.step([fault, None, "east", "east"])
  assert results[victim].done and results[victim].stats.end_reason == "error"
  assert reason in results[victim].stats.error
  # The other worker's episodes carry on.
  assert all(not r.done and r.stats.end_reason == "running" for r in results[2:])
  # The sibling on the failed worker lost its episode; it ends with the reason at its next step.
  r = pool.step([None, "east", "east", None])
  assert r[sibling].done and r[sibling].stats.end_reason == "error" and reason in r[sibling].stats.error
  assert not r[2].done and r[2].stats.length == 2
  # The worker was replaced, and reset slots play again.
  assert pool.worker_pids[pool.worker_of(victim)] != old_pid and _gone(old_pid)
  obs = pool.reset([SEEDS[0], SEEDS[1]], indices=[0, 1])
  assert all("map" in o.text for o in obs)
  assert all(not r.done for r in pool.step(["east"] * 4))


def test_killed_worker_is_replaced(pool):
  pool.reset(SEEDS)
  pid = pool.worker_pids[0]
  tmpdir = pool._workers[0].tmpdir
  assert any(name.startswith("nle") for name in os.listdir(tmpdir))  # NLE's per-game dirs
  os.kill(pid, signal.SIGKILL)
  _wait_until_dead(pid)
  results = pool.step(["east"] * 4)
  assert [r.stats.end_reason for r in results] == ["error", "error", "running", "running"]
  assert "died" in results[0].stats.error and results[0].feedback.startswith("The environment failed")
  assert results[0].stats.seed == SEEDS[0]
  assert pool.worker_pids[0] != pid and _gone(pid)
  assert not os.path.exists(tmpdir)  # what the killed worker left in its TMPDIR is gone
  pool.reset(SEEDS[:2], indices=[0, 1])
  assert all(r.valid_action and not r.done for r in pool.step(["east"] * 4))


def test_worker_that_exits_midstep(pool):
  _check_failure(pool, "__exit__", "died")


def test_hung_worker_is_replaced(pool):
  # The pool's own step budget (4 s here) declared it hung, not some other failure.
  _check_failure(pool, "__hang__", "hung (no reply within 4s)")


def test_exception_costs_only_that_episode(pool):
  pool.reset(SEEDS)
  pid = pool.worker_pids[0]
  results = pool.step(["__raise__", "east", "east", "east"])
  assert results[0].done and results[0].stats.end_reason == "error"
  assert "ValueError: injected fault" in results[0].stats.error
  assert all(not r.done for r in results[1:])
  assert pool.worker_pids[0] == pid  # the worker itself is fine
  assert pool.step(["east", "east", None, None])[0].done  # stays done until reset
  pool.reset([5], indices=[0])
  assert not pool.step(["east", None, None, None])[0].done


def test_close_leaves_no_processes():
  before = _our_children()
  p = EnvPool(faulty_factory(), num_envs=2, num_workers=2)
  pids = p.worker_pids
  tmpdirs = [w.tmpdir for w in p._workers]
  assert set(pids) <= _our_children()
  p.reset([1, 2])
  p.close()
  assert not any(os.path.exists(d) for d in tmpdirs)
  p.close()  # idempotent
  assert all(_gone(pid) for pid in pids)
  assert _our_children() <= before
  with pytest.raises(RuntimeError, match="closed"):
    p.step(["east", "east"])


def test_keyboard_interrupt_mid_step_leaves_no_processes():
  before = _our_children()
  p = EnvPool(faulty_factory(), num_envs=2, num_workers=1, step_timeout_s=600)
  pids = p.worker_pids
  p.reset([1, 2])
  timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
  timer.start()
  with pytest.raises(KeyboardInterrupt):
    p.step(["__hang__", "east"])
  timer.join()
  assert all(_gone(pid) for pid in pids)
  assert _our_children() <= before


def test_worker_that_cannot_build_its_env_is_a_clear_error():
  before = _our_children()
  bad = functools.partial(NLESlotEnv, "minihack", "MiniHack-NoSuchTask-v0", max_steps=10)
  with pytest.raises(RuntimeError, match=r"failed to build its envs: .*NoSuchTask"):
    EnvPool(bad, num_envs=1, num_workers=1)
  with pytest.raises(RuntimeError, match=r"exited during start-up \(exit code 7\)"):
    EnvPool(functools.partial(os._exit, 7), num_envs=1, num_workers=1)
  assert _our_children() <= before


_KILLED_PARENT = """
import os, signal, sys
from automem.envs.pool import EnvPool
from tests.support.faulty_env import faulty_factory
if __name__ == "__main__":
  pool = EnvPool(faulty_factory(), num_envs=2, num_workers=2, step_timeout_s=600)
  pool.reset([1, 2])
  pool.step_async(["__hang__", "east"])
  print(" ".join(str(p) for p in pool.worker_pids), flush=True)
  print(" ".join(w.tmpdir for w in pool._workers), flush=True)
  os.kill(os.getpid(), signal.SIGKILL)
"""


def test_workers_die_with_a_killed_parent(tmp_path):
  script = tmp_path / "parent.py"
  script.write_text(_KILLED_PARENT)
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = {**os.environ, "PYTHONPATH": root}
  out = tmp_path / "out.txt"
  with open(out, "w") as f:  # a file, not a pipe: an orphan holding a pipe would block us
    proc = subprocess.Popen([sys.executable, str(script)], stdout=f, stderr=subprocess.DEVNULL, env=env, cwd=root)
    assert proc.wait(timeout=300) == -signal.SIGKILL
  pid_line, tmp_line = out.read_text().splitlines()
  pids = [int(p) for p in pid_line.split()]
  assert len(pids) == 2
  deadline = time.monotonic() + 20
  while time.monotonic() < deadline and not all(_gone(p) for p in pids):
    time.sleep(0.1)
  # Both the idle worker and the one stuck in a step are gone (orphans get reaped by init).
  alive = [p for p in pids if not _gone(p)]
  for p in alive:  # leave nothing behind even when the check fails
    os.kill(p, signal.SIGKILL)
  for d in tmp_line.split():  # a killed parent cannot remove its workers' TMPDIRs
    shutil.rmtree(d, ignore_errors=True)
  assert not alive


_JAX_PARENT = """
import jax  # an entry point's heavy imports live in __main__
import psutil
from automem.envs.minihack import MiniHackEnv
if __name__ == "__main__":
  env = MiniHackEnv(1, "Corridor-R3", num_workers=1)
  worker = psutil.Process(env.worker_pids[0])
  maps = " ".join(m.path for m in worker.memory_maps())
  parent = psutil.Process()
  print("jaxlib" in maps, worker.memory_info().rss // 2**20, parent.memory_info().rss // 2**20)
  env.close()
"""


def test_workers_do_not_import_the_parents_main(tmp_path):
  script = tmp_path / "entry.py"
  script.write_text(_JAX_PARENT)
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = {**os.environ, "PYTHONPATH": root, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300, cwd=root)
  assert proc.returncode == 0, proc.stderr[-2000:]
  has_jax, worker_mib, parent_mib = proc.stdout.split()
  assert has_jax == "False"  # multiprocessing's spawn would have re-imported entry.py, jax and all
  # Measured against the parent in the same run (about a third of it here), not an absolute
  # figure: a worker that had imported jax would be as large as the parent.
  assert int(worker_mib) < 0.6 * int(parent_mib), (worker_mib, parent_mib)


@pytest.mark.parametrize(
    ("game", "kwargs"),
    [("nethack", {"num_workers": 1}), ("minihack", {"num_workers": 0, "task": "MazeWalk-9x9"}),
     ("crafter_original", {"num_workers": 0, "area": (24, 24)})],
)
def test_registry_builds_the_pooled_games(game, kwargs):
  from automem.envs import make_env

  with make_env(game, 2, **kwargs) as env:
    assert env.num_envs == 2 and env.game == ("crafter" if game == "crafter_original" else game)
    obs = env.reset([1, 2])
    assert all(o.text for o in obs)
    results = env.step([env.action_names[0], None])
    assert results[0].valid_action and results[1] is None
