"""The tiny model's corpus: real games, the real command language and action names, and every
request rendered exactly as the memory agent renders it."""

from __future__ import annotations

import random
import re

import pytest

from automem.agent import AgentConfig, EpisodeAgent
from automem.envs import make_env
from automem.llm import LLMResult
from automem.memory import MemoryStore, load_structure, parse_commands
from automem.models.tiny import agent_chats
from automem.models.tiny_corpus import _Episode


def test_agent_chats_use_the_parser_real_games_and_the_offered_actions():
  chats = agent_chats(num_episodes=8, seed=3)
  assert len(chats) >= 8
  games = set()
  log_ops, actions = set(), set()
  refused = 0
  for segs, head_chars in chats:
    text = "".join(s.text for s in segs)
    game = re.search(r"You are an agent playing (\w+)", text).group(1).lower()
    games.add(game)
    # The head (kept in view by every pretraining row) ends with the offered action list.
    offered = text[:head_chars].split("VALID GAME ACTIONS")[1].split("\n")[1:]
    names = {re.sub(r" \(.*\)$", "", a) for a in offered if a}
    assert text[head_chars:].lstrip().startswith("=== In the LOG phase ===")
    # Observations are the envs' own text.
    assert ("Your status:" in text) if game == "crafter" else ("map (you are the @" in text)
    completions = [(k, s.text[: -len("<|im_end|>")]) for k, s in enumerate(segs) if s.completion]
    assert completions and all(s.text.endswith("<|im_end|>") for s in segs if s.completion)
    structure = load_structure(game)
    for k, c in completions:
      parsed = parse_commands(c)
      assert not parsed.errors, (c, parsed.errors)
      assert parsed.commands or c == ""
      for cmd in parsed.commands:
        if cmd.op == "ACTION" and cmd.args[0] in names:
          actions.add(cmd.args[0])
          assert not segs[k].refused
        elif cmd.op == "ACTION":  # a refused name: the next message lists the offered ones
          refused += 1
          assert segs[k].refused  # context for the recovery, never a training target
          after = "".join(s.text for s in segs[k + 1:])
          assert "[ERROR ACTION]" in after or k == completions[-1][0], after[:300]
        elif cmd.op != "DONE":
          assert cmd.op in structure.log.allowed_ops
          log_ops.add(cmd.op)
  assert games == {"crafter", "minihack", "nethack"}
  assert {"APPEND", "SEARCH"} <= log_ops
  assert len(actions) > 5
  assert refused > 0  # recovering from a refused name is in the corpus


def _chat_text(messages: list[dict[str, str]]) -> str:
  return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)


@pytest.mark.parametrize("game,task,cap", [
    ("crafter", "crafter", 0), ("crafter", "crafter", 5200),
    ("minihack", "MiniHack-Corridor-R3-v0", 5200), ("nethack", "NetHackChallenge-v0", 5200),
    ("minihack", "MiniHack-Corridor-R3-v0", 4600)])
def test_every_corpus_request_is_the_agents_own(tmp_path, game, task, cap):
  """Replays a corpus episode through the real `EpisodeAgent` on the same env and seed,
  answering each request with the corpus's completion: every request the agent makes must
  be the corpus chat's text up to that completion (prompt cap, cuts, trims and all)."""
  env_name = "crafter_original" if game == "crafter" else game
  kw = {"task": task} if game == "minihack" else {}
  env_a, env_b = make_env(env_name, 1, **kw), make_env(env_name, 1, **kw)
  try:
    episode = _Episode(random.Random(1), game, task, env_a, str(tmp_path / "a"),
                       env_a.reset([123])[0], cap=cap, embedded=True)
    chats = episode.play(6)
    # (prefix before a completion, the completion) of every chat, in order.
    expected = []
    for segs, _ in chats:
      text = ""
      for s in segs:
        if s.completion:
          expected.append((text, s.text[: -len("<|im_end|>")]))
        text += s.text
    agent = EpisodeAgent(
        episode_id="e", game=game, task=task, seed=123, structure=episode.st,
        store=MemoryStore.from_structure(str(tmp_path / "b"), episode.st),
        action_names=env_b.action_names, action_reader=env_b.action_reader,
        config=AgentConfig(max_prompt_chars=cap))
    agent.store.reset()
    agent.start(env_b.reset([123])[0])
    asked, trims, afresh, refused = 0, 0, 0, 0
    while agent.live:
      req = agent.pending_request()
      if req is None:
        agent.on_env_step(env_b.step([agent.action])[0])
        if agent.step >= 6:
          break
        continue
      prefix, completion = expected[asked]
      got = _chat_text(req.request.messages) + "<|im_start|>assistant\n"
      assert got == prefix, f"request {asked} differs"
      trims += "(left out to keep the prompt short)" in got
      refused += "[ERROR ACTION]" in got.rsplit("<|im_start|>user", 1)[-1]
      afresh += len(req.request.messages) == 2 and agent.step > 0 and agent.phase.value == "plan"
      agent.on_llm_result(LLMResult(text=completion, finish_reason="stop"))
      asked += 1
    assert asked == len(expected) > 6
    if game == "crafter":  # a refused name answered with the offered ones, then committed
      assert refused
    if game != "crafter":  # long prompts meet the cap: parts trimmed, PLAN afresh
      assert trims and afresh
    if cap == 4600:  # and a LOG phase cut short (the request after it is PLAN afresh)
      assert any("(This phase is over: the prompt reached" in s.text
                 for segs, _ in chats for s in segs)
  finally:
    env_a.close()
    env_b.close()


def test_the_corpus_plays_the_embedded_runs_settings():
  """The corpus copies the embedded run's structure overrides, prompt cap and trim order
  (models may not import the agent or the configs): they must stay equal."""
  from automem.agent import episode
  from automem.models import tiny_corpus
  from experiments.configs.evaluate import get_config

  config = get_config()
  for game in ("crafter", "minihack", "nethack"):
    overrides = config.game[game].structure_overrides.to_dict()
    flat = {"log.max_iterations": overrides["log"]["max_iterations"],
            "plan.max_iterations": overrides["plan"]["max_iterations"],
            "game_rules": overrides["game_rules"]}
    assert flat == tiny_corpus.EMBEDDED_REVISION
  assert config.agent.max_prompt_chars == tiny_corpus._PROMPT_CAP
  assert episode._TRIM_ORDER == tiny_corpus._TRIM_ORDER


def test_training_rows_stay_within_the_models_positions(tiny_tokenizer):
  from automem.models.tiny import _training_windows

  toks, weights, positions, segments = _training_windows(
      tiny_tokenizer, 6, 0, 64, 64, 128, (0.5, 5.0, 30.0), max_position=1200)
  assert positions.max() < 1200 and len(toks) > 0
  assert (weights[segments == 0] == 0).all()  # padding carries no loss
  with pytest.raises(ValueError, match="no training rows"):
    _training_windows(tiny_tokenizer, 0, 0, 64, 64, 128, (0.5, 5.0, 30.0), max_position=4096)
