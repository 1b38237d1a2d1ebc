"""One step of every BALROG MiniHack task, Crafter and NetHack, with every shipped structure.

The local backend (the tiny model) plays one env step per episode; every episode must end at
its step cap, none with an error. A structure that does not fit a task costs only that
task's episodes; the paper-scale config refuses the tiny model instead of failing every
episode.
"""

from __future__ import annotations

import json
import os

import pytest

from automem.llm import LocalClient
from automem.rollout.evaluate import check_model_fits, evaluate
from experiments.configs.evaluate import BALROG_MINIHACK, get_config

pytestmark = pytest.mark.slow

COMPACT_SYSTEM = "You play {game} ({task}). Commit one action; else {fallback_action} is played."


def one_step_config(variant: str, minihack_tasks=BALROG_MINIHACK):
  config = get_config("games=crafter;minihack;nethack,episodes=1,steps=1")
  config.progress = False
  config.game.minihack.tasks = tuple(minihack_tasks)
  for s in (config.agent.memory_sampling, config.agent.action_sampling):
    s.max_new_tokens = 8
  config.agent.max_prompt_chars = 3000
  for g in ("crafter", "minihack", "nethack"):
    gc = config.game[g]
    gc.structure = variant
    gc.envs_per_task = 1
    gc.env_kwargs = {} if g == "crafter" else {"num_workers": 1}
    # Compact system texts keep each prompt in the engine's one 2048-token bucket.
    gc.structure_overrides.log.system = COMPACT_SYSTEM
    gc.structure_overrides.plan.system = COMPACT_SYSTEM
  return config


def _episodes(workdir):
  with open(os.path.join(workdir, "summary.json")) as f:
    summary = json.load(f)
  ends, prompt_tokens = {}, []
  for name in os.listdir(os.path.join(workdir, "trajectories")):
    with open(os.path.join(workdir, "trajectories", name)) as f:
      lines = [json.loads(line) for line in f]
    ends[name] = lines[-1]
    prompt_tokens += [r["prompt_tokens"] for r in lines if r.get("type") == "turn"]
  return summary, ends, prompt_tokens


@pytest.mark.parametrize("variant", ["v0", "evolved"])
def test_one_step_of_every_task_with_every_structure(variant, tmp_path, rollout_engine):
  engine, tok, params = rollout_engine
  client = LocalClient(engine, tok, sampling_params_cls=params, max_batch_size=2)
  workdir = str(tmp_path / variant)
  evaluate(one_step_config(variant), workdir, clients={"base": client})
  summary, ends, prompt_tokens = _episodes(workdir)
  assert 0 < max(prompt_tokens) <= 2048  # one engine bucket: the run compiles nothing new
  assert len(ends) == len(BALROG_MINIHACK) + 2 == summary["episodes_finished"]
  for name, end in ends.items():
    assert end["type"] == "end" and end["error"] is None, (name, end["error"])
    assert end["stats"]["length"] == 1 and end["stats"]["end_reason"] == "step_cap", name
  with open(os.path.join(workdir, "structures", "minihack.json")) as f:
    recorded = json.load(f)
  assert bool(recorded["task_overrides"]) == (variant == "evolved")


def test_a_structure_task_mismatch_costs_only_that_task(tmp_path, rollout_engine):
  engine, tok, params = rollout_engine
  client = LocalClient(engine, tok, sampling_params_cls=params, max_batch_size=2)
  config = one_step_config("v0", ("MiniHack-Boxoban-Medium-v0", "MiniHack-Corridor-R3-v0"))
  config.games = "minihack"
  config.game.minihack.structure_overrides.fallback_alternatives = ("wait",)  # Boxoban: no
  workdir = str(tmp_path / "mismatch")
  evaluate(config, workdir, clients={"base": client})
  _, ends, _ = _episodes(workdir)
  by_task = {e["stats"]["task"]: e for e in ends.values()}
  assert by_task["MiniHack-Corridor-R3-v0"]["error"] is None
  reason = by_task["MiniHack-Boxoban-Medium-v0"]["error"]
  assert "structure does not fit MiniHack-Boxoban-Medium-v0" in reason
  assert "fallback_alternatives" in reason


def test_full_config_refuses_the_tiny_model():
  config = get_config("full,backend=local")
  with pytest.raises(ValueError, match="tiny offline model holds 4096 tokens"):
    check_model_fits(config)
  # Inside a job's config (the pipeline's `config.eval`) the error names that path's flags.
  with pytest.raises(ValueError, match=r"^config\.eval\.agent\.max_prompt_chars: .*"
                     r"--config\.eval\.agent\.max_prompt_chars=\d+"):
    check_model_fits(config, "config.eval")
  config.agent.max_prompt_chars = 5000
  check_model_fits(config)
  config.llm.local.checkpoint = "/some/real/checkpoint"
  config.agent.max_prompt_chars = 0
  check_model_fits(config)
  check_model_fits(get_config("full"))  # an SGLang server is the user's to size
