"""Real runner output from the three games -> every selector -> build_dataset -> a train step.

The policy that plays is a scripted client (it stands in for the 32B model; it
writes, searches and acts through the real agent, store and envs). Re-query and
the judge go through the real HTTP test server with the OpenAI client; its
engine is scripted too (deterministic answers a test can check).
"""

from __future__ import annotations

import asyncio
import json
import zlib

import jax.numpy as jnp
import numpy as np
import pytest

from automem.agent import AgentConfig, read_trajectories
from automem.credit import (
    CounterfactualConfig,
    JudgeConfig,
    RequeryConfig,
    SelectionConfig,
    aselect_decisions,
    check_replay,
    counterfactual_scores,
    deterministic_candidates,
    judge_scores,
    plan_forks,
    requery_scores,
    run_forks,
    select_decisions,
)
from automem.credit.counterfactual import Fork
from automem.credit.select import agent_config_of, load_structures
from automem.envs import make_env
from automem.llm import LLMResult, default_llm_config, make_client
from automem.memory import load_structure
from automem.models import sharding as shd
from automem.models.checkpoint import load_hf_checkpoint
from automem.models.lora import ALL_TARGETS, LoraConfig, apply_lora
from automem.proficiency import batches, dataset, read_selected_turns, steps
from automem.proficiency.selection import load_turns
from automem.proficiency.trainer import Trainer
from automem.rollout import EpisodePlan, GameSetup, RunDir, Runner
from tests.support.llm_server import LLMTestServer

pytestmark = pytest.mark.slow

GAMES = {"crafter": "crafter", "minihack": "MiniHack-Corridor-R3-v0", "nethack": "nethack"}
MAX_STEPS = 4
JUDGE_MARK = "You review one memory decision"


def _crc(*parts) -> int:
  return zlib.crc32("\x1f".join(map(str, parts)).encode())


class ScriptedPolicy:
  """The client interface; LOG appends a line, PLAN searches first, then acts by a seeded hash."""

  def __init__(self, names: dict[str, tuple[str, ...]]):
    self.names = names
    self.requests = 0

  async def generate(self, requests):
    out = []
    for r in requests:
      self.requests += 1
      eid, step, phase, turn = r.request_id.rsplit("/", 3)
      last = r.messages[-1]["content"]
      if phase == "log":
        note = last.strip().splitlines()[-1][:50].replace("|", "/")
        text = f"Noting.\n<|APPEND|>notes.txt|step {step}: {note}<|END|>\n<|DONE|>"
      elif phase == "plan" and turn == "0":
        text = f"<|SEARCH|>notes.txt|step {max(int(step) - 1, 0)}<|END|>"
      else:
        names = self.names[eid.split("-")[0]]
        text = f"<|ACTION|>{names[_crc(last, r.seed) % len(names)]}<|END|>"
      out.append(LLMResult(text=text, finish_reason="stop", prompt_tokens=10,
                           completion_tokens=5))
    return out


class ScriptedEngine:
  """A generation engine for the HTTP test server: judge verdicts and actions, from the prompt."""

  def __init__(self, tokenizer, names):
    self.tok = tokenizer
    self.names = sorted({n for ns in names.values() for n in ns}, key=len, reverse=True)

  def generate(self, prompts, params):
    outs = []
    for ids, p in zip(prompts, params):
      text = self.tok.decode(ids)
      if JUDGE_MARK in text:
        answer = json.dumps({"score": _crc(text) % 11, "reason": "scripted"})
      else:
        shown = [n for n in self.names if n in text] or self.names
        answer = f"<|ACTION|>{shown[_crc(text, p.seed) % len(shown)]}<|END|>"
      toks = self.tok.encode(answer)
      outs.append(type("Out", (), {"text": answer, "token_ids": toks,
                                   "completion_tokens": len(toks), "finish_reason": "stop"}))
    return outs


@pytest.fixture(scope="module")
def names():
  return {}  # game -> action names, filled in as the runner makes its envs


@pytest.fixture(scope="module")
def run(tmp_path_factory, names):
  """Two Crafter episodes and one each of MiniHack and NetHack, played by the real runner."""
  root = str(tmp_path_factory.mktemp("sel_run"))
  run_dir = RunDir(root)
  setups, plans = {}, []
  for game, task in GAMES.items():
    structure = load_structure(game).revise({"log.max_iterations": 1, "plan.max_iterations": 2},
                                            note="short test episodes")
    structure.save(run_dir.path("structures", f"{game}.json"))
    kw = {"max_steps": MAX_STEPS} | ({} if game == "crafter" else {"num_workers": 1})
    setups[game] = GameSetup(game, structure, kw, envs_per_task=2)
    for seed in range(2 if game == "crafter" else 1):
      plans.append(EpisodePlan(f"{game}-{seed}", game, task, seed, "train"))
  def factory(game, n, **kw):
    env = make_env(game, n, **kw)
    names[game] = env.action_names
    return env

  Runner(run_dir, setups, plans, {"base": ScriptedPolicy(names)}, AgentConfig(seed=7),
         env_factory=factory, progress=False).run()
  return root, read_trajectories(root, finished_only=True)


@pytest.fixture(scope="module")
def server(tiny_tokenizer, names):
  from automem.models import SamplingParams

  with LLMTestServer(ScriptedEngine(tiny_tokenizer, names), tiny_tokenizer,
                     SamplingParams) as s:
    yield s


def _openai(server):
  cfg = default_llm_config("openai")
  cfg.base_url = server.url + "/v1"
  cfg.model = "tiny-model"
  cfg.api_key_env = ""
  return make_client(cfg)


def test_runner_records_what_credit_needs(run):
  _, trajs = run
  assert sorted(t.header.game for t in trajs) == ["crafter", "crafter", "minihack", "nethack"]
  for t in trajs:
    assert t.schema_version == 1 and t.header.env_settings["max_steps"] == MAX_STEPS
    assert t.header.initial_observation and all(s.observation for s in t.steps)
    assert all(turn.sampling_seed is not None for turn in t.turns)
    assert {turn.phase_end for turn in t.turns} >= {"done", "action"}
    reads = [c for turn in t.turns for c in turn.commands if c["op"] == "SEARCH" and c["ok"]]
    assert any(c["meta"]["returned"].get("notes.txt") for c in reads)
    assert t.end.replay["actions"] == t.actions() and len(t.actions()) == MAX_STEPS


def test_replay_is_exact_on_all_three_games(run, tmp_path):
  _, trajs = run
  structures = load_structures(trajs)
  for t in trajs:
    assert check_replay(t, structure=structures[t.path],
                        memory_root=str(tmp_path / t.episode_id)) == [], t.episode_id


def test_counterfactual_forks_batch_per_game_and_pair_their_arms(run, names):
  _, trajs = run
  structures = load_structures(trajs)
  cands, _ = deterministic_candidates(trajs)
  cfg = CounterfactualConfig(horizon=2, samples=1, max_decisions=3)
  forks = plan_forks(cands, trajs, cfg)
  assert {f.game for f in forks} == set(GAMES)
  made = []

  def factory(game, n, **kw):
    made.append((game, n))
    return make_env(game, n, **kw)

  policy = ScriptedPolicy(names)
  outcomes = run_forks(forks, client=policy, structures=structures,
                       agent_config=agent_config_of(trajs[0]), horizon=2, env_factory=factory)
  # One batched env per game (and env setting): every Crafter fork in one vmapped batch.
  assert sorted(made) == sorted((g, sum(f.game == g for f in forks)) for g in GAMES)
  assert all(o.error is None for o in outcomes)
  for o in outcomes:  # K more steps, unless the step cap ends the episode first
    assert o.steps == min(2, MAX_STEPS - len(o.fork.prefix)) > 0
  scores = counterfactual_scores(outcomes)
  assert len(scores) == len(forks) // (2 * cfg.samples)
  # Nothing altered: both arms with the same memory play the same game exactly.
  same = [Fork(f.decision, arm, 0, 5, f.memory, f.game, f.task, f.episode_seed, f.env_settings,
               f.prefix) for f in forks[:1] for arm in ("with", "without")]
  a, b = run_forks(same, client=policy, structures=structures, agent_config=AgentConfig(),
                   horizon=2)
  assert (a.reward, a.progression, a.unlocks) == (b.reward, b.progression, b.unlocks)

  def broken(game, n, **kw):
    raise RuntimeError("worker died")

  lost = run_forks(same, client=policy, structures=structures, agent_config=AgentConfig(),
                   horizon=2, env_factory=broken)
  assert [o.error for o in lost] == ["fork env failed: RuntimeError: worker died"] * 2
  assert counterfactual_scores(lost) == []


def test_requery_and_judge_through_the_http_server(run, server, tmp_path):
  _, trajs = run
  cands, _ = deterministic_candidates(trajs)
  n = 2

  async def go():
    client = _openai(server)
    async with client:
      rq = await requery_scores(cands, trajs, client, RequeryConfig(samples=n))
      server.requests.clear()
      judged = await judge_scores(cands, trajs, client, JudgeConfig(max_items=5),
                                  log_path=str(tmp_path / "judge.jsonl"), model="tiny-model")
    return rq, judged

  (rq, log), judged = asyncio.run(go())
  assert log and all(row["errors"] == 0 and len(row["withheld"]) == n for row in log)
  assert all(-1 <= row["influence"] <= 1 for row in log) and rq
  assert len(judged) == 5 == len(server.requests)
  rows = [json.loads(x) for x in (tmp_path / "judge.jsonl").read_text().splitlines()]
  for row, (_, body) in zip(rows, server.requests):
    assert row["messages"] == body["messages"]
    assert row["score"] == json.loads(row["answer"])["score"] / 10


def test_every_selector_then_build_dataset_then_a_train_step(run, server, tiny_checkpoint_dir,
                                                             names, tmp_path):
  root, _ = run
  cfg = SelectionConfig(filters=("top_episodes",), top_episode_fraction=1.0,
                        scorers=("usage", "requery", "counterfactual", "judge"),
                        requery=RequeryConfig(samples=2),
                        counterfactual=CounterfactualConfig(horizon=1, samples=1,
                                                            max_decisions=3),
                        judge=JudgeConfig(max_items=6))

  async def go():
    client = _openai(server)
    async with client:
      return await aselect_decisions([root], str(tmp_path / "sel"), cfg,
                                     {"policy": client, "judge": client})

  selected, stats = asyncio.run(go())
  assert stats["scored"]["usage"] and stats["scored"]["judge"] == 6
  assert stats["scored"]["counterfactual"] and stats["scored"]["requery"]
  assert set(stats["by_game"]) == set(GAMES)
  assert set(stats["rank_agreement"]) >= {"judge|usage", "counterfactual|usage"}
  refs = read_selected_turns(str(tmp_path / "sel" / "selected_turns.jsonl"))
  assert len(refs) == len(selected) and {r.weight for r in refs} != {1.0}
  with pytest.raises(ValueError, match="needs a 'judge'"):
    select_decisions([root], str(tmp_path / "x"), SelectionConfig(scorers=("judge",)))

  tok = dataset.ModelChatTokenizer.from_pretrained(tiny_checkpoint_dir)
  out = str(tmp_path / "data")
  _, dstats = dataset.build_dataset(load_turns(refs), tok, dataset.DatasetConfig(
      row_length=256, val_fraction=0.0), out)
  assert dstats
  rows = {k: np.asarray(v) for k, v in dataset.load_split(out, "train").items()}
  assert rows["weights"].sum() > 0
  mesh = shd.make_mesh(1, 1, 1)
  model = load_hf_checkpoint(tiny_checkpoint_dir, mesh, dtype="float32")
  apply_lora(model, LoraConfig(rank=2, alpha=4.0, targets=ALL_TARGETS), seed=0, mesh=mesh)
  trainer = Trainer(model, mesh, steps.OptimConfig(learning_rate=1e-2, warmup_steps=1,
                                                   total_steps=2),
                    finetune="lora", frozen_dtype=jnp.float32)
  batch = batches.BatchSource(rows, 1, 1, seed=0, sharding=trainer.batch_sharding)
  state = trainer.init_state()
  state, m = trainer.step(state, batch.global_batch_arrays(0))
  assert np.isfinite(float(m["loss"])) and float(m["loss"]) > 0
