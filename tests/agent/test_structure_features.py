"""Each MemoryStructure v1 feature as the agent applies it, on the real games.

The envs are real (Craftax-Classic, NetHack, MiniHack); the completions are scripted (they
stand in for the model: each feature needs a particular command at a particular turn).
"""

from __future__ import annotations

import pytest

from automem.agent import AgentConfig, EpisodeAgent, Phase
from automem.agent.observers import run_observers
from automem.envs import make_env
from automem.llm import LLMResult
from automem.memory import MemoryStore, StructureError, load_structure


@pytest.fixture(scope="module")
def nethack_env():
  env = make_env("nethack", num_envs=1, num_workers=1)
  yield env
  env.close()


@pytest.fixture(scope="module")
def corridor_env():
  env = make_env("minihack", num_envs=1, num_workers=1, task="MiniHack-Corridor-R3-v0")
  yield env
  env.close()


@pytest.fixture(scope="module")
def crafter_env():
  env = make_env("crafter", num_envs=1)
  yield env
  env.close()


class Game:
  """An agent on a real env, driven by scripted completions."""

  def __init__(self, tmp_path, env, structure, game, task, seed=3, config=None):
    self.env = env
    self.store = MemoryStore.from_structure(tmp_path / f"mem-{game}", structure.for_task(task))
    self.store.reset()
    self.agent = EpisodeAgent(episode_id=f"{game}-{seed}", game=game, task=task, seed=seed,
                              structure=structure, store=self.store,
                              action_names=env.action_names, config=config,
                              action_reader=env.action_reader)
    self.agent.start(env.reset([seed])[0])
    self.records: list[dict] = []

  def prompt(self) -> str:
    return self.agent.pending_request().request.messages[-1]["content"]

  def say(self, text: str) -> dict:
    req = self.agent.pending_request()
    assert req is not None, self.agent.phase
    self.agent.on_llm_result(LLMResult(text=text, finish_reason="stop", prompt_tokens=10,
                                       completion_tokens=3))
    self.records += self.agent.drain_records()
    return req

  def step(self):
    assert self.agent.phase is Phase.ACT
    result = self.env.step([self.agent.action])[0]
    self.agent.on_env_step(result)
    self.records += self.agent.drain_records()
    return result

  def turns(self):
    return [r for r in self.records + self.agent._step_records if r["type"] == "turn"]


def test_pinned_view_sits_after_the_history_and_before_the_observation(tmp_path, corridor_env):
  g = Game(tmp_path, corridor_env, load_structure("minihack", "evolved"), "minihack",
           "MiniHack-Corridor-R3-v0")
  text = g.prompt()
  assert text.index("RECENT STEPS") < text.index("PINNED: actions_log.txt (last 6 lines)") \
      < text.index("CURRENT OBSERVATION")
  g.say("<|ACTION|>search<|END|>")
  g.step()
  g.say("<|APPEND|>actions_log.txt|Step 0 'search': nothing found<|END|><|DONE|>")
  plan = g.prompt()  # the follow-up of LOG carries the PLAN user message
  pinned = plan.split("PINNED: actions_log.txt", 1)[1].split("CURRENT OBSERVATION")[0]
  assert "Step 0 'search': nothing found" in pinned
  # The system message is the same for every request (the pin is not in it).
  system = g.agent.pending_request().request.messages[0]["content"]
  assert "PINNED" not in system


def test_harness_file_updates_each_step_and_refuses_writes(tmp_path, nethack_env):
  g = Game(tmp_path, nethack_env, load_structure("nethack", "evolved"), "nethack",
           "NetHackChallenge-v0")
  first = g.store.read_text("status.txt")
  assert first.startswith("step 0\n") and "position x=" in first
  assert "\na: " in g.store.read_text("inventory.txt")
  g.say("<|ACTION|>search<|END|>")
  g.step()
  assert g.store.read_text("status.txt").startswith("step 1\n")
  step = next(r for r in g.records if r["type"] == "step")
  assert "status.txt" in step["harness_diff"]["changed"]
  g.say("<|WRITE|>status.txt|I am invincible<|END|><|DONE|>")
  write = g.turns()[-1]["commands"][0]
  assert not write["ok"] and "read-only" in write["result"]
  assert g.store.read_text("status.txt").startswith("step 1\n")


def test_retention_keeps_the_header_and_the_last_lines(tmp_path, corridor_env):
  base = load_structure("minihack")
  i = [f.name for f in base.files].index("actions_log.txt")
  s = base.revise({f"files.{i}.keep_last": 2, f"files.{i}.keep_header": 1,
                   f"files.{i}.content": "# header\n"}, note="tight retention")
  g = Game(tmp_path, corridor_env, s, "minihack", "MiniHack-Corridor-R3-v0")
  g.say("<|ACTION|>search<|END|>")
  g.step()
  g.say("".join(f"<|APPEND|>actions_log.txt|line {k}<|END|>" for k in range(4)) + "<|DONE|>")
  assert g.store.read_text("actions_log.txt") == "# header\nline 2\nline 3\n"
  log_turn = g.turns()[-1]
  assert "actions_log.txt" in log_turn["harness_diff"]["changed"]  # recorded for replay


def test_action_check_rejects_then_lets_through(tmp_path, crafter_env):
  g = Game(tmp_path, crafter_env, load_structure("crafter", "evolved"), "crafter", "crafter")
  assert g.store.read_text("progress.txt").startswith("[ ] collect_wood")
  for _ in range(2):
    g.say("<|ACTION|>Place Table<|END|>")
    assert g.agent.phase is Phase.PLAN
    rejected = g.turns()[-1]
    assert rejected["check_rejection"]["check"] == "requirements"
    assert "2 more wood" in rejected["check_rejection"]["reason"]
    assert "[CHECK] 'Place Table' was not played" in g.prompt()
  g.say("<|ACTION|>Place Table<|END|>")  # the third goes through (max_rejections=2)
  assert g.agent.phase is Phase.ACT and g.agent.action == "Place Table"
  assert g.agent.metrics.action_rejections == 2


def test_action_repair_is_recorded(tmp_path, crafter_env):
  g = Game(tmp_path, crafter_env, load_structure("crafter", "evolved"), "crafter", "crafter",
           seed=4)
  g.say("<|ACTION|>go west<|END|>")
  assert g.agent.action == "Move West"
  turn = g.turns()[-1]
  assert turn["action_repair"] == {"written": "go west", "action": "Move West"}
  assert g.agent.metrics.action_repairs == 1
  assert "read as 'Move West'" in turn["commands"][-1]["result"]


def test_direction_mode_switches_template_and_ops(tmp_path, nethack_env):
  g = Game(tmp_path, nethack_env, load_structure("nethack", "evolved"), "nethack",
           "NetHackChallenge-v0", seed=5)
  g.say("<|ACTION|>kick<|END|>")
  result = g.step()
  assert result.observation.info["awaiting"] == "direction"
  g.say("<|DONE|>")  # LOG
  plan = g.prompt()
  assert "The game asked for a DIRECTION" in plan and "CURRENT OBSERVATION" in plan
  g.say("<|SEARCH|>game_rules.txt|kick<|END|>")  # not in the mode's ops
  turn = g.turns()[-1]
  assert turn["mode"] == "direction" and not turn["commands"][0]["ok"]
  assert "not allowed" in turn["commands"][0]["result"]
  g.say("<|ACTION|>north<|END|>")
  g.step()
  g.say("<|DONE|>")
  assert "The game asked for a DIRECTION" not in g.prompt()  # the mode is off again


def test_task_overrides_and_fallback_alternatives(tmp_path, corridor_env):
  evolved = load_structure("minihack", "evolved")
  store = MemoryStore.from_structure(tmp_path / "m", evolved)
  box = EpisodeAgent(episode_id="b", game="minihack", task="MiniHack-Boxoban-Hard-v0", seed=1,
                     structure=evolved, store=store,
                     action_names=("north", "east", "south", "west"))
  assert box.fallback_action == "north" and "Sokoban" in box.structure.game_rules
  v0 = load_structure("minihack").revise({"fallback_alternatives": ["wait"]}, note="no moves")
  with pytest.raises(StructureError, match="fallback_alternatives"):
    EpisodeAgent(episode_id="x", game="minihack", task="MiniHack-Boxoban-Hard-v0", seed=1,
                 structure=v0, store=store, action_names=("north", "east", "south", "west"))


def test_typed_info_feeds_observers_on_the_real_games(tmp_path, crafter_env, corridor_env):
  obs = crafter_env.reset([11])[0]
  view = obs.info["view"]
  assert len(view) == 7 and len(view[0]) == 9 and "grass" in {c for row in view for c in row}
  with make_env("crafter_original", num_envs=1, num_workers=1) as original:
    view = original.reset([11])[0].info["view"]
  assert len(view) == 7 and len(view[0]) == 9 and view[3][4] == "player"
  g = Game(tmp_path, corridor_env, load_structure("minihack", "evolved"), "minihack",
           "MiniHack-Corridor-R3-v0")
  helpers = run_observers(g.agent.structure.observers_for("plan"), g.agent._views)
  assert "Passable next to you:" in helpers and "Least-visited open direction:" in helpers


def _log_index(structure):
  return [f.name for f in structure.files].index("actions_log.txt")


def test_size_warning_and_hook_order(tmp_path, corridor_env):
  base = load_structure("minihack")
  i = _log_index(base)
  quiet = [f.name for f in base.files if f.name != "dungeon_map.txt"]
  s = base.revise({"size_warning.max_lines": 2, "size_warning.exempt": quiet,
                   "size_warning.phases": ["log", "plan"],
                   f"files.{i}.keep_last": 1, "hooks.retention": "step_start"},
                  note="warn early, trim at the start of a step")
  g = Game(tmp_path, corridor_env, s, "minihack", "MiniHack-Corridor-R3-v0")
  assert "Note:" not in g.prompt()
  g.say("<|ACTION|>search<|END|>")
  g.step()
  g.say("<|APPEND|>actions_log.txt|a\nb\nc<|END|><|APPEND|>dungeon_map.txt|x\ny\nz<|END|>"
        "<|DONE|>")
  # Retention runs at step_start, so after LOG the three lines are still there...
  assert g.store.read_text("actions_log.txt") == "a\nb\nc\n"
  plan = g.prompt()
  assert "Note: dungeon_map.txt has 3 lines / 6 bytes (over 2 lines)" in plan
  assert "actions_log.txt has" not in plan  # exempt
  g.say("<|ACTION|>search<|END|>")
  g.step()
  # ...and the next step's start trims them, before LOG sees the file.
  assert g.store.read_text("actions_log.txt") == "c\n"
  step = [r for r in g.records if r["type"] == "step"][-1]
  assert "actions_log.txt" in step["harness_diff"]["changed"]


def test_agent_texts_come_from_the_structure(tmp_path, corridor_env):
  s = load_structure("minihack").revise(
      {"texts.no_action": "PICK ONE NOW.", "texts.outcome": "you got {reward} points",
       "texts.outcome_fallback": " [FALLBACK]", "plan.max_iterations": 2},
      note="louder texts")
  g = Game(tmp_path, corridor_env, s, "minihack", "MiniHack-Corridor-R3-v0")
  g.say("<|SEARCH|>strategy.txt|goal<|END|>")
  assert g.prompt().endswith("PICK ONE NOW.")
  g.say("thinking...")  # no action within plan.max_iterations: the fallback is played
  g.step()
  assert "step 0: search -> you got 0 points [FALLBACK]" in g.prompt()


def test_a_first_prompt_past_the_cap_leaves_out_optional_parts(tmp_path, corridor_env):
  s = load_structure("minihack", "evolved")
  full = Game(tmp_path / "a", corridor_env, s, "minihack", "MiniHack-Corridor-R3-v0")
  size = len(full.agent._system) + len(full.prompt())
  assert "Passable next to you" in full.prompt()
  g = Game(tmp_path / "b", corridor_env, s, "minihack", "MiniHack-Corridor-R3-v0",
           config=AgentConfig(max_prompt_chars=size - 20))
  text = g.prompt()
  assert "Passable next to you" not in text and "(left out to keep the prompt short)" in text
  assert "PINNED: actions_log.txt" in text and "CURRENT OBSERVATION" in text  # kept
  g.say("<|ACTION|>search<|END|>")
  assert g.turns()[-1]["prompt_trimmed"] == ["helpers"]


def test_harness_changes_replay_from_the_trajectory(tmp_path, nethack_env):
  from automem.agent import TrajectoryWriter, read_trajectory, replay_memory

  s = load_structure("nethack", "evolved")
  i = [f.name for f in s.files].index("actions_log.txt")
  s = s.revise({f"files.{i}.keep_last": 1}, note="trim the log after LOG")
  g = Game(tmp_path, nethack_env, s, "nethack", "NetHackChallenge-v0", seed=6)
  path = tmp_path / "t.jsonl"
  writer = TrajectoryWriter(path, {"episode_id": g.agent.episode_id,
                                   "initial_memory": g.store.snapshot()})
  g.say("<|ACTION|>search<|END|>")
  g.step()
  g.say("<|APPEND|>actions_log.txt|one\ntwo<|END|><|DONE|>")
  g.say("<|ACTION|>search<|END|>")
  g.step()
  g.agent.fail("stopped by the test")
  writer.write(g.records + g.agent.drain_records())
  writer.close()
  traj = read_trajectory(path)
  assert any(t.extra.get("harness_diff") for t in traj.turns)  # the after-LOG trim
  assert any(st.extra.get("harness_diff") for st in traj.steps)  # status.txt after each step
  plan = traj.turns[-1]
  assert traj.memory_after(plan.step, plan.phase, plan.turn)["actions_log.txt"] == "two\n"
  assert traj.memory_before(1, "log", 0)["status.txt"].startswith("step 1\n")
  fresh = MemoryStore.from_structure(tmp_path / "replay", s)
  fresh.restore(traj.header.initial_memory)
  assert replay_memory(traj, fresh, s) == []


def _user_texts(g: Game) -> str:
  return "\n".join(m["content"] for t in g.turns() for m in t["messages"] if m["role"] == "user")


def test_env_judges_action_text_aliases_and_arguments_reach_nethack(tmp_path, nethack_env):
  g = Game(tmp_path, nethack_env, load_structure("nethack"), "nethack", "NetHackChallenge-v0")
  system = g.agent.pending_request().request.messages[0]["content"]
  assert "enter (also: more)" in system.splitlines()  # the env's alias hint in the list
  # A name with an argument goes to the game as written, never as plain `wield`.
  g.say("<|ACTION|>wield -<|END|>")
  assert g.agent.action == "wield -"
  result = g.step()
  assert result.valid_action and "You are empty handed." in result.observation.text
  g.say("<|DONE|>")
  # An argument the prompt cannot take is refused with the env's reason; nothing is played.
  g.say("<|ACTION|>wield foo bar<|END|>")
  assert g.agent.phase is Phase.PLAN
  assert "[ERROR ACTION] Invalid action 'wield foo bar': 'foo' cannot be passed" in g.prompt()
  g.say("<|ACTION|>more<|END|>")  # BALROG's name of Enter
  assert g.agent.action == "more"
  assert g.step().valid_action
  g.say("<|DONE|>")
  g.say("<|ACTION|>frobnicate<|END|>")  # an unknown name still gets the list
  assert "[ERROR ACTION] unknown action 'frobnicate'; choose one of: north, east" in g.prompt()
  acts = [(t["action"], t.get("action_name")) for t in g.turns() if t["action"]]
  assert acts == [("wield -", "wield"), ("more", "enter")]
  assert g.agent.metrics.invalid_commands == 2


def test_sixteen_point_direction_is_played_and_explained_on_minihack(tmp_path, corridor_env):
  g = Game(tmp_path, corridor_env, load_structure("minihack"), "minihack",
           "MiniHack-Corridor-R3-v0")
  g.say("<|ACTION|>westnorthwest<|END|>")
  assert g.agent.action == "westnorthwest"
  turn = g.turns()[-1]
  assert turn["action_name"] == "west" and "taken as 'west'" in turn["action_note"]
  result = g.step()
  assert result.valid_action and "taken as 'west'" in result.feedback
  g.say("<|DONE|>")
  assert "taken as 'west'" in _user_texts(g)  # the env's feedback reached the model
