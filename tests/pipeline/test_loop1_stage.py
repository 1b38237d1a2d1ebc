"""The loop1 stage running Loop 1 for real at tiny scale: killed inside, resumed, replayed
nothing on a rerun; its lineage reaches the report."""

from __future__ import annotations

import json
import os

import pytest

from automem.memory import MemoryStructure, load_structure
from automem.pipeline import read_summary, run_pipeline, summary_path
from automem.pipeline.loop1 import incumbent_structure, loop1_config
from automem.report import build_report, find_versions
from tests.pipeline.conftest import pipeline_config
from tests.pipeline.test_pipeline import NoClient
from tests.rollout.test_evaluate_e2e import CountingClient, KillAfter, local_client

pytestmark = pytest.mark.slow


def loop1_pipeline_config(workdir: str):
  """Loop 1 alone on Crafter: one round, one offline candidate raced on one selection seed."""
  config = pipeline_config(workdir, "games=crafter,episodes=1,steps=2")
  config.artifacts.structure = ""
  config.stages = "loop1"
  config.skip = ""
  loop = config.loop1
  loop.rounds, loop.candidates = 1, 1
  loop.race.stages, loop.race.confirm_seeds, loop.review.episodes = (1,), 0, 0
  return config


def test_loop1_stage_runs_loop1_and_resumes_after_a_kill(tmp_path, rollout_engine, pipeline_run):
  workdir = str(tmp_path / "pipe")
  config = loop1_pipeline_config(workdir)
  client = CountingClient(local_client(rollout_engine))
  clients = {"base": client}
  # Killed at the race's third env step: the incumbent's episode (2 steps) is finished,
  # the candidate's is not.
  with pytest.raises(KeyboardInterrupt):
    run_pipeline(config, workdir, clients=clients, env_factory=KillAfter(3))
  loop_dir = os.path.join(workdir, "loop1", "crafter")
  assert read_summary(workdir, "loop1") is None
  assert os.path.isfile(os.path.join(loop_dir, "rounds", "r0", "proposals.json"))
  finished = {}
  for root, _, files in os.walk(os.path.join(loop_dir, "evals")):
    for name in files:
      path = os.path.join(root, name)
      if name.endswith(".jsonl") and "trajectories" in root:
        with open(path) as f:
          if json.loads(f.read().splitlines()[-1])["type"] == "end":
            finished[path] = os.path.getmtime(path)
  assert len(finished) == 1

  results = run_pipeline(config, workdir, clients=clients)
  loop1 = results["loop1"]
  assert loop1["source"] == "loop" and loop1["episodes"] == 2
  # Only a game whose incumbent moved past v0 hands a structure to the final stage.
  assert ("crafter" in loop1["structures"]) == (loop1["incumbents"]["crafter"] != "v0")
  assert loop1["runs"] == {"crafter": loop_dir}
  assert all(os.path.getmtime(p) == t for p, t in finished.items())  # not played again
  with open(os.path.join(loop_dir, "lineage.jsonl")) as f:
    (rec,) = [json.loads(x) for x in f.read().splitlines()]
  assert rec["proposer"] == "offline" and rec["decision"] in (
      "accepted", "rejected_test", "rejected_confirm", "dropped")
  assert len(rec["per_seed"]["candidate"]) == len(rec["per_seed"]["incumbent"]) == 1
  with open(os.path.join(loop_dir, "config.json")) as f:
    saved = json.load(f)
  assert saved["game"] == "crafter" and saved["race"]["test"] == "bootstrap"
  assert saved["eval"]["seed_set"] == "selection"

  # A rerun finds the stage done; a rerun inside the stage replays nothing either.
  assert run_pipeline(config, workdir, clients={"base": NoClient()}) == results
  os.remove(summary_path(workdir, "loop1"))
  calls = len(client.calls)
  again = run_pipeline(config, workdir, clients=clients)
  assert len(client.calls) == calls and again["loop1"]["accepted"] == loop1["accepted"]

  # The report of a pipeline workdir plots the per-game lineage of its Loop 1.
  v0 = find_versions(pipeline_run[0])[:1]
  report = build_report(v0, str(tmp_path / "report"), seed_set="", search_roots=(workdir,))
  assert [r["game"] for r in report["lineage"]] == ["crafter"]
  assert report["lineage"][0]["candidate"] == rec["candidate"]
  assert any(p.endswith(".png") for p in report["figures"]["lineage"])


def test_loop1_config_per_game_and_incumbent_structure_file(tmp_path):
  config = loop1_pipeline_config(str(tmp_path))
  config.eval.games = "crafter,minihack,nethack"
  tests = {g: loop1_config(config, g).race.test for g in ("crafter", "minihack")}
  assert tests == {"crafter": "bootstrap", "minihack": "sign"}
  assert loop1_config(config, "nethack").race.metric == "dense"
  assert "games" not in loop1_config(config, "crafter")
  # revisions/vK.json carries the loop id; the stage hands the final stage the plain file.
  v1 = load_structure("crafter").revise({"log.max_iterations": 1}, "one LOG turn")
  os.makedirs(tmp_path / "revisions")
  os.makedirs(tmp_path / "structures")
  v1.save(str(tmp_path / "structures" / "c3.json"))
  with open(tmp_path / "revisions" / "v1.json", "w") as f:
    json.dump({**v1.to_dict(), "loop_id": "c3"}, f)
  path = incumbent_structure(str(tmp_path), "v1")
  assert MemoryStructure.load(path).to_dict() == v1.to_dict()
  config.loop1.games = "crafter;atari"
  with pytest.raises(ValueError, match="atari"):
    run_pipeline(config, str(tmp_path / "p"))
