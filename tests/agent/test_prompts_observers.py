"""Prompt assembly helpers and the helper observers."""

from __future__ import annotations

from automem.agent import StepView, prompts, run_observers
from automem.memory import MemoryStore, ObserverSpec, load_structure


def test_history_window_moves_in_blocks():
  starts = [prompts.history_window_start(n, 8) for n in range(30)]
  assert starts[:9] == [0] * 9
  for n, start in enumerate(starts):
    assert n - start <= 8 and start % 4 == 0
  # The start only moves every 4 steps, so the text before the newest line stays put.
  changes = [n for n in range(1, 30) if starts[n] != starts[n - 1]]
  assert changes == [9, 13, 17, 21, 25, 29]
  assert prompts.history_window_start(5, 0) == 5


def test_history_text_is_append_only_inside_the_window():
  entries = [prompts.HistoryEntry(i, "Noop", "reward 0") for i in range(6)]
  a = prompts.history_text(entries[:5], 8)
  b = prompts.history_text(entries, 8)
  assert b.startswith(a) and b.count("\n") == 5
  assert prompts.history_text([], 8) == "(no steps yet)"


def test_system_text_writes_the_shared_head_once():
  structure = load_structure("nethack")
  text = prompts.system_text(structure, ["north", "south"], "NetHackChallenge-v0")
  assert text.count("GAME KNOWLEDGE") == 1
  assert text.index("THIS IS THE LOG ROUTINE") < text.index("THIS IS THE PLAN ROUTINE")
  assert "=== In the LOG phase ===" in text and "<|DONE|>" in text and "<|ACTION|>" in text
  assert "north\nsouth" in text


def test_file_index_without_sizes_is_stable_under_appends(tmp_path):
  structure = load_structure("crafter")
  store = MemoryStore.from_structure(tmp_path / "m", structure)
  before = prompts.file_index_text(store, sizes=False)
  store.write("map_notes.txt", "tree east\n")
  assert prompts.file_index_text(store, sizes=False) == before
  assert prompts.file_index_text(store, sizes=True) == store.index_text()
  assert "bytes" in prompts.file_index_text(store, sizes=True)
  assert "map_notes.txt" in before and "bytes" not in before


def test_build_messages_layouts():
  turns = [{"role": "user", "content": "obs here"}]
  cached = prompts.build_messages(layout="cached", system="S", turns=turns, observation="O",
                                  file_index="I")
  assert cached == [{"role": "system", "content": "S"}, {"role": "user", "content": "obs here"}]
  paper = prompts.build_messages(layout="paper", system="S", turns=turns, observation="O",
                                 file_index="I")
  assert paper[0]["content"].startswith("S") and paper[0]["content"].endswith("O")
  assert prompts.shared_prefix_len([1, 2, 3, 4], [1, 2, 5]) == 2


def view(text, action=None, reward=0.0, info=None):
  return StepView(action, reward, text, info or {})


def test_stagnation_and_repetition():
  stag = ObserverSpec("stagnation", params={"min_unchanged": 1, "strong_after": 3})
  rep = ObserverSpec("repetition", params={"window": 6, "min_repeats": 4})
  history = [view("a")] + [view("a", "Noop") for _ in range(2)]
  assert "2 step(s) without change" in run_observers([stag], history)
  history.append(view("a", "Noop"))
  assert run_observers([stag], history).startswith("WARNING: nothing has changed for 3 steps")
  assert run_observers([stag], [*history, view("b", "Move West")]) == ""
  assert run_observers([rep], history) == ""
  history.append(view("c", "Noop"))
  assert "'Noop' was 4 of your last 4 actions" in run_observers([rep], history)


def test_stagnation_compares_game_state_not_daylight():
  stag = ObserverSpec("stagnation", params={"min_unchanged": 1, "strong_after": 3})
  info = {"position": [3, 4], "facing": "north", "inventory": {}, "vitals": {"health": 9}}
  history = [view("daylight 80%", info=info), view("daylight 79%", "Noop", info=info)]
  assert "1 step(s) without change" in run_observers([stag], history)
  moved = dict(info, position=[2, 4])
  assert run_observers([stag], [*history, view("daylight 78%", "Move West", info=moved)]) == ""
  nle = {"vitals": {"x": 4, "y": 5, "hp": 12, "time": 10}, "inventory": ["a: sword"],
         "message": ""}
  later = {**nle, "vitals": {**nle["vitals"], "time": 11}}
  assert run_observers([stag], [view("T:10", info=nle), view("T:11", "search", info=later)])


def test_vitals_crafter_and_nethack():
  spec = ObserverSpec("vitals", params={"threshold": 0.3})
  crafter = view("x", info={"vitals": {"health": 2, "food": 9, "drink": 1, "energy": 5}})
  assert run_observers([spec], [crafter]) == "WARNING: low health 2/9, drink 1/9. Take care of it now."
  nethack = view("x", info={"vitals": {"hp": 3, "max_hp": 14, "hunger": "Hungry"}})
  assert run_observers([spec], [nethack]) == (
      "WARNING: low HP 3/14, hunger status Hungry. Take care of it now.")
  assert run_observers([spec], [view("x", info={"vitals": {"hp": 14, "max_hp": 14}})]) == ""


def test_map_passability_reads_the_nle_map():
  rows = [" " * 10] * 3 + ["  |.....  ", "  |.@.#>  ", "  ------  "] + [" " * 10] * 15
  info = {"map": rows, "vitals": {"x": 4, "y": 4, "hp": 10, "max_hp": 10}}
  spec = ObserverSpec("map_passability", params={"radius": 2, "show_stairs": True})
  out = run_observers([spec], [view("(text is not read)", info=info)])
  assert out.startswith("Passable next to you: north, east, west, northeast, northwest; "
                        "blocked: south, southeast, southwest.")
  assert "east 2" in out
  assert "stairs down at x=7, y=4 (+3 east, +0 south)" in out
  assert run_observers([spec], [view("You see: tree")]) == ""
