"""The trace viewer in real headless Chromium (Debian's package, DevTools protocol)."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from automem.agent.trajectory import TrajectoryWriter
from automem.memory import apply_diff, diff_snapshots
from automem.viewer import ViewerServer, export_run
from tests.support.browser import Browser

pytestmark = pytest.mark.slow

READY = "document.body.dataset.ready === '1'"


def _read(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


async def _open(b, episode, step=0):
  await b.eval(f"document.querySelector('tr.episode[data-id=\"{episode}\"]').click()")
  await b.wait_for(f"{READY} && document.body.dataset.step === '{step}'")


def _chunks_loaded(names):
  return sorted({n.rsplit("/", 1)[-1] for n in names if "/chunk-" in n})


LOADED = "window.automemLoads"


def test_static_viewer_of_a_real_run(pipeline_run, tmp_path):
  workdir, _, _, _ = pipeline_run
  run = os.path.join(workdir, "v0")
  page = export_run(run, str(tmp_path / "viewer"), chunk=1)
  episodes = sorted(f[:-6] for f in os.listdir(os.path.join(run, "trajectories")))
  ep = episodes[0]
  recs = _read(os.path.join(run, "trajectories", f"{ep}.jsonl"))
  steps = [r for r in recs if r["type"] == "step"]
  turns = [r for r in recs if r["type"] == "turn"]
  end = recs[-1]

  async def drive():
    async with Browser() as b:
      await b.goto("file://" + page)
      await b.wait_for(READY)
      rows = await b.eval("[...document.querySelectorAll('tr.episode')].map(r => r.dataset.id)")
      assert rows == episodes
      prog = await b.eval("document.querySelector('tr.episode .progression').textContent")
      assert float(prog) == pytest.approx(end["stats"]["progression"])
      await _open(b, ep)
      shown = await b.eval("[...document.querySelectorAll('#turns .turn')]"
                           ".map(t => t.dataset.phase)")
      assert shown == [t["phase"] for t in turns if t["step"] == 0]
      completions = await b.eval("[...document.querySelectorAll('#turns .completion')]"
                                 ".map(c => c.textContent)")
      assert completions == [t["completion"] for t in turns if t["step"] == 0]
      await b.eval("document.getElementById('next-step').click()")
      await b.wait_for(f"{READY} && document.body.dataset.step === '1'")
      assert await b.eval("document.getElementById('step-action').textContent") == \
          steps[1]["action"]
      assert _chunks_loaded(await b.eval(LOADED)) == ["chunk-00000.js", "chunk-00001.js"]
      # The memory files as they were after step 1.
      memory = recs[0]["initial_memory"]
      for t in turns:
        if t["step"] <= 1:
          memory = apply_diff(memory, t["memory_diff"])
      files = await b.eval("[...document.querySelectorAll('#memory-files option')]"
                           ".map(o => o.value)")
      assert files == sorted(memory)
      # Filter by fallback, then jump through the matches.
      await b.eval("const f = document.getElementById('filter'); f.value = 'fallback';"
                   "f.dispatchEvent(new Event('change'))")
      fallbacks = [s["step"] for s in steps if s["fallback"]]
      assert await b.eval("document.getElementById('match-count').textContent") == \
          f"{len(fallbacks)} matching steps"
      await b.eval("document.getElementById('first-step').click()")
      await b.wait_for(f"{READY} && document.body.dataset.step === '0'")
      later = [s for s in fallbacks if s > 0]
      if later:
        await b.eval("document.getElementById('next-match').click()")
        await b.wait_for(f"{READY} && document.body.dataset.step === '{later[0]}'")
      shot = await b.screenshot(str(tmp_path / "viewer.png"))
    with open(shot, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(shot) > 10_000

  asyncio.run(drive())


def _long_episode(run_dir, n_steps):
  """A long episode in the trajectory schema (NetHack-sized runs are paged, not loaded)."""
  memory = {"notes.txt": ""}
  header = {"episode_id": "nethack-long-7", "game": "nethack", "task": "NetHackChallenge-v0",
            "seed": 7, "seed_set": "test", "structure_label": "nethack-v0",
            "action_names": ["north", "south"], "initial_memory": dict(memory)}
  w = TrajectoryWriter(os.path.join(run_dir, "trajectories", "nethack-long-7.jsonl"), header)
  snapshots = {}
  for i in range(n_steps):
    before = dict(memory)
    commands = []
    if i % 100 == 0:
      memory["notes.txt"] += f"step {i}\n"
      commands = [{"op": "APPEND", "args": ["notes.txt", f"step {i}"], "span": [0, 9],
                   "ok": True, "result": "ok"}]
    action = "north" if i % 2 else "south"
    w.write([{"type": "turn", "episode_id": "nethack-long-7", "step": i, "phase": "log",
              "turn": 0, "messages": [{"role": "system", "content": "sys"},
                                      {"role": "user", "content": f"obs {i}"}],
              "completion": f"c{i}", "commands": commands,
              "memory_diff": diff_snapshots(before, memory), "prompt_tokens": 5},
             {"type": "step", "episode_id": "nethack-long-7", "step": i, "action": action,
              "fallback": i % 7 == 0, "reward": 1.0 if i % 1000 == 999 else 0.0,
              "progression": 0.0, "valid_action": True, "feedback": "",
              "achievements": ["Dlvl:2"] if i >= 1500 else []}])
    snapshots[i] = dict(memory)
  w.write([{"type": "end", "episode_id": "nethack-long-7",
            "stats": {"progression": 0.0, "end_reason": "step_cap", "length": n_steps},
            "metrics": {"env_steps": n_steps, "stats": {"progression": 0.0,
                                                        "end_reason": "step_cap"}},
            "error": None, "final_memory": memory}])
  w.close()
  return snapshots


def test_served_viewer_pages_a_long_episode(tmp_path):
  run = str(tmp_path / "run")
  n = 3000
  snapshots = _long_episode(run, n)
  server = ViewerServer(run, str(tmp_path / "cache"), port=0, chunk=50)
  server.start()

  async def drive():
    async with Browser() as b:
      await b.goto(server.url)
      await b.wait_for(READY)
      await _open(b, "nethack-long-7")
      assert await b.eval("document.getElementById('num-steps').textContent") == str(n)
      await b.eval("const s = document.getElementById('step-num'); s.value = 2345;"
                   "s.dispatchEvent(new Event('change'))")
      await b.wait_for(f"{READY} && document.body.dataset.step === '2345'")
      assert await b.eval("document.getElementById('step-action').textContent") == "north"
      assert await b.eval("document.getElementById('memory-content').textContent") == \
          snapshots[2345]["notes.txt"]
      # Only the chunks of the steps shown were fetched.
      assert _chunks_loaded(await b.eval(LOADED)) == ["chunk-00000.js", "chunk-00046.js"]
      # Jump to an achievement; filter by reward events.
      await b.eval("document.querySelector('#achievements a').click()")
      await b.wait_for(f"{READY} && document.body.dataset.step === '1500'")
      await b.eval("const f = document.getElementById('filter'); f.value = 'reward';"
                   "f.dispatchEvent(new Event('change'))")
      assert await b.eval("document.getElementById('match-count').textContent") == \
          "3 matching steps"
      await b.eval("document.getElementById('next-match').click()")
      await b.wait_for(f"{READY} && document.body.dataset.step === '1999'")

  try:
    asyncio.run(drive())
  finally:
    server.close()
  assert 0 < server.requests < 40
