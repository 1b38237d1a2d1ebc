"""The pipeline on CPU: every stage, resume between and within stages, a loop not wired yet."""

from __future__ import annotations

import json
import os

import pytest

from automem.pipeline import read_summary, run_pipeline, summary_path
from tests.pipeline.conftest import pipeline_config

pytestmark = pytest.mark.slow


class NoClient:
  """A client that must not be used (a resumed pipeline with nothing left to play)."""

  usage = None

  async def generate(self, requests):
    raise AssertionError("a finished stage was run again")

  async def close(self):
    pass


def test_every_stage_ran_and_wrote_its_summary(pipeline_run):
  workdir, _, results, _ = pipeline_run
  assert list(results) == ["v0", "loop1", "loop2", "final", "report"]
  assert results["loop2"] == {"skipped": True}
  assert not os.path.exists(summary_path(workdir, "loop2"))
  assert results["loop1"]["source"] == "artifact"
  assert results["final"]["versions"] == ["v0", "v1"]
  for stage in ("v0", "loop1", "final", "report"):
    assert read_summary(workdir, stage)["stage"] == stage
  for run in (os.path.join(workdir, "v0"), os.path.join(workdir, "final", "v1")):
    with open(os.path.join(run, "summary.json")) as f:
      assert json.load(f)["episodes_finished"] == 2
  # v1 played the artifact's structure: one LOG turn per step.
  with open(os.path.join(workdir, "final", "v1", "structures", "crafter.json")) as f:
    assert json.load(f)["log"]["max_iterations"] == 1
  report = results["report"]
  assert os.path.isfile(report["report"])
  assert set(report["viewers"]) == {"v0", "v1"}
  assert all(os.path.isfile(p) for p in report["viewers"].values())
  rows = report["table"]["crafter"]
  assert [r["version"] for r in rows] == ["v0", "v1"]
  assert rows[1]["vs_v0_pairs"] == 2


def test_kills_within_and_between_stages_resume(pipeline_run):
  workdir, _, _, trace = pipeline_run
  # Killed inside v0: no stage summary, a partial run directory that the rerun completed.
  assert trace["v0_summary_after_kill"] is None
  assert len(trace["partial_trajectories"]) == 2
  # Killed before final: v0 and loop1 were done and were not run again afterwards.
  assert trace["final_summary_after_break"] is None
  assert os.path.getmtime(summary_path(workdir, "v0")) == trace["v0_summary_mtime"]
  assert os.path.getmtime(summary_path(workdir, "loop1")) == trace["loop1_summary_mtime"]
  v0 = read_summary(workdir, "v0")
  assert v0["summary"]["episodes_finished"] == 2


def test_a_rerun_finds_every_stage_done(pipeline_run):
  workdir, config, results, _ = pipeline_run
  again = run_pipeline(config, workdir, clients={"base": NoClient()})
  assert again == results


def test_loop2_is_wired_to_improve_proficiency_on_one_game(tmp_path, monkeypatch):
  from automem.pipeline import loop2
  from automem.proficiency.loop import append_ledger

  config = pipeline_config(str(tmp_path))
  config.skip = ""
  config.stages = "loop2"
  calls = []

  def fake_loop(cfg, workdir, **kwargs):  # the real loop is tested in tests/proficiency
    calls.append((cfg, workdir))
    os.makedirs(workdir, exist_ok=True)
    row = {"round": 0, "recipe_id": "usage-r4", "adapter": str(tmp_path / "adapter"),
           "decision": "rejected_test"}
    append_ledger(os.path.join(workdir, "ledger.jsonl"), [row])
    return {"chosen": "usage-r4", "ledger": os.path.join(workdir, "ledger.jsonl")}

  monkeypatch.setattr("automem.proficiency.improve_proficiency", fake_loop)
  out = run_pipeline(config, str(tmp_path))["loop2"]
  [(cfg, workdir)] = calls
  assert workdir == os.path.join(str(tmp_path), "loop2", "crafter")
  assert cfg.game == "crafter" and cfg.eval.games == "crafter" and cfg.final.episodes == 0
  assert cfg.structure == "" and cfg.deploy == "local"
  assert out["adapter"] == str(tmp_path / "adapter") and out["accepted"] is False
  assert out["game"] == "crafter" and out["source"] == "loop"
  # Loop 1's structure for the game is where Loop 2 starts.
  lc = loop2.loop2_config(config, "crafter", "/s/crafter_v2.json")
  assert lc.structure == "/s/crafter_v2.json"
  config.loop2.game = "nethack"
  with pytest.raises(ValueError, match=r"loop2\.game names 'nethack'"):
    loop2.loop2_game(config)
  config.skip = "loop2"
  assert run_pipeline(config, str(tmp_path / "b")) == {"loop2": {"skipped": True}}


def test_a_missing_artifact_is_a_clear_error(tmp_path):
  config = pipeline_config(str(tmp_path))
  config.artifacts.structure = str(tmp_path / "nope.json")
  config.stages = "loop1"
  with pytest.raises(FileNotFoundError, match=r"nope\.json"):
    run_pipeline(config, str(tmp_path))
