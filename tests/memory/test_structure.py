"""MemoryStructure: v0 files, JSON round trip, validation naming fields, revisions."""

from __future__ import annotations

import dataclasses
import json
from importlib import resources

import pytest

from automem.memory import (
    DYNAMIC_PLACEHOLDERS,
    MemoryStore,
    MemoryStructure,
    StructureError,
    available_structures,
    load_structure,
    spec_reference,
    structure_diff,
)

GAMES = ("crafter", "minihack", "nethack")


@pytest.fixture(scope="module")
def base():
  return load_structure("nethack")


def _with(base, change):
  """The JSON form of `base` with `change(d)` applied, rebuilt (validates)."""
  d = base.to_dict()
  change(d)
  return MemoryStructure.from_dict(d)


@pytest.mark.parametrize("game", GAMES)
def test_v0_structures_are_valid_canonical_and_paper_shaped(game, tmp_path):
  s = load_structure(game)
  assert (s.game, s.version, s.parent) == (game, 0, None)
  text = (resources.files("automem.memory") / "structures" / f"{game}.json").read_text()
  assert s.to_json() == text  # the shipped file is exactly the canonical form
  assert MemoryStructure.from_json(text) == s
  # The paper's starting agent: LOG writes and ends with DONE; PLAN reads and acts.
  assert "DONE" in s.log.allowed_ops and "APPEND" in s.log.allowed_ops
  assert set(s.plan.allowed_ops) == {"SEARCH", "READ", "TAIL", "COUNT", "ACTION"}
  assert "strategy.txt" in [f.name for f in s.files]
  store = MemoryStore.from_structure(tmp_path, s)
  assert len(store.names()) == len(s.files)
  sysp = s.system_prompt("plan", actions=["a", "b"], task="t")
  assert "{" not in sysp.replace("{ fountain", "") and s.game_rules in sysp
  values = {k: f"<{k}>" for k in DYNAMIC_PLACEHOLDERS}
  for phase in ("log", "plan"):
    user = s.user_prompt(phase, **values)
    assert user.index("<file_index>") < user.index("<history>") < user.index("<observation>")
    assert "<results>" in s.follow_up_prompt(phase, results="<results>", file_index="",
                                             helpers="", step=1)


def test_resolve_fallback_picks_an_offered_action():
  mh = load_structure("minihack")
  assert mh.resolve_fallback(["north", "search", "kick"]) == "search"
  assert mh.resolve_fallback(["north", "apply", "pickup"]) == "pickup"  # KeyRoom has no search
  assert mh.resolve_fallback(["north", "south"]) == "north"  # Boxoban offers only moves
  assert mh.resolve_fallback(["east", "south"]) is None
  assert load_structure("crafter").resolve_fallback(["Noop", "Move West"]) == "Noop"


def test_aliases_and_unknown_game():
  assert load_structure("crafter_original") == load_structure("crafter")
  assert set(GAMES) <= set(available_structures())
  with pytest.raises(ValueError, match="no shipped structure"):
    load_structure("pong")


def test_log_and_plan_share_a_cacheable_prefix(base):
  a = base.system_prompt("log", actions=["north"], task="t")
  b = base.system_prompt("plan", actions=["north"], task="t")
  common = len(next(iter(
      [a[:i] for i in range(min(len(a), len(b)), 0, -1) if a[:i] == b[:i]]), ""))
  assert common > len(base.game_rules)


def test_missing_placeholder_value_is_named(base):
  with pytest.raises(KeyError, match=r"\{observation\}"):
    base.user_prompt("plan", file_index="", history="", helpers="", step=1)


@pytest.mark.parametrize("change, field", [
    (lambda d: d["plan"].update(user=d["plan"]["user"] + "{secret}"), "plan.user"),
    (lambda d: d["log"].update(system=d["log"]["system"] + "{observation}"), "log.system"),
    (lambda d: d["log"].update(user="{observation}\n{file_index}"), "log.user"),
    (lambda d: d["plan"].update(user="{file_index}"), "plan.user"),
    (lambda d: d["plan"].update(follow_up="no results here"), "plan.follow_up"),
    (lambda d: d["log"].update(system="unbalanced { brace"), "log.system"),
    (lambda d: d["log"].update(system="{game.__class__}"), "log.system"),
    (lambda d: d["log"].update(system="x" * 20_000), "log.system"),
    (lambda d: d.update(game_rules="y" * 50_000), "game_rules"),
    (lambda d: d["files"].append({"name": "../../etc/passwd"}), "files[7].name"),
    (lambda d: d["files"].append({"name": "STRATEGY.TXT"}), "files[7].name"),
    (lambda d: d["files"][0].update(content="z" * 40_000), "files[0].content"),
    (lambda d: d["limits"].update(max_files=0), "limits.max_files"),
    (lambda d: d["limits"].update(max_read_chars=10**9), "limits.max_read_chars"),
    (lambda d: d["plan"].update(allowed_ops=["SEARCH"]), "plan.allowed_ops"),
    (lambda d: d["plan"].update(allowed_ops=["SEARCH", "ACTION", "FLY"]), "plan.allowed_ops"),
    (lambda d: d["log"].update(allowed_ops=["DONE", "ACTION"]), "log.allowed_ops"),
    (lambda d: d["log"].update(allowed_ops=["DONE", "UPSERT_MAP"]), "log.allowed_ops"),
    (lambda d: d["log"].update(max_iterations=0), "log.max_iterations"),
    (lambda d: d["plan"].update(max_commands_per_turn=1000), "plan.max_commands_per_turn"),
    (lambda d: d["observers"].append({"name": "telepathy"}), "observers[2].name"),
    (lambda d: d["observers"][0]["params"].update(min_unchanged=-1),
     "observers[0].params.min_unchanged"),
    (lambda d: d["observers"][0]["params"].update(colour=1), "observers[0].params.colour"),
    (lambda d: d["observers"][1].update(phases=["act"]), "observers[1].phases"),
    (lambda d: d.update(fallback_action=""), "fallback_action"),
    (lambda d: d.update(fallback_alternatives=["ok", "two\nlines"]), "fallback_alternatives"),
    (lambda d: d.update(history_length=10_000), "history_length"),
    (lambda d: d.update(map_file="../map.txt"), "map_file"),
    (lambda d: d.update(version=2, parent=5), "parent"),
    (lambda d: d.update(schema="other/9"), "schema"),
    (lambda d: d.update(surprise=1), "surprise"),
    (lambda d: d["plan"].update(temperature=0.1), "plan.temperature"),
])
def test_validation_names_the_field(base, change, field):
  with pytest.raises(StructureError) as e:
    _with(base, change)
  assert e.value.field == field, str(e.value)
  assert str(e.value).startswith(field)


@pytest.mark.parametrize("path", [
    ("game",), ("game_rules",), ("log",), ("plan",), ("log", "system"), ("plan", "allowed_ops"),
    ("files", 0, "name"), ("observers", 0, "name"),
])
def test_missing_required_field_is_named(base, path):
  d = base.to_dict()
  node = d
  for part in path[:-1]:
    node = node[part]
  del node[path[-1]]
  field = ".".join(str(p) for p in path).replace(".0.", "[0].")
  with pytest.raises(StructureError) as e:
    MemoryStructure.from_dict(d)
  assert e.value.field == field, str(e.value)
  assert "missing" in e.value.message and "positional" not in str(e.value)


def test_from_json_rejects_non_json():
  with pytest.raises(StructureError, match="not valid JSON"):
    MemoryStructure.from_json("{nope")


def test_revise_records_parent_note_and_readable_diff(base, tmp_path):
  v1 = base.revise({
      "map_file": "dungeon_map.txt",
      "log.allowed_ops": [*base.log.allowed_ops, "UPSERT_MAP"],
      "plan.max_iterations": 3,
      "files.2.description": "one line per coordinate, updated with UPSERT_MAP",
      "observers.1.params.radius": 2,
      "observers.2": {"name": "repetition", "params": {"window": 6}},
  }, "coordinate-keyed map to stop duplicate entries")
  assert (v1.version, v1.parent) == (1, 0)
  assert v1.note == "coordinate-keyed map to stop duplicate entries"
  assert v1.plan.max_iterations == 3 and v1.observers[2].param("min_repeats") == 4
  assert "~ plan.max_iterations: 5 -> 3" in v1.changes
  assert '~ map_file: null -> "dungeon_map.txt"' in v1.changes
  assert "+ observers[repetition].name" in v1.changes
  assert "~ observers[map_passability].params.radius: 1 -> 2" in v1.changes
  assert v1.changes == structure_diff(base, v1)
  v1.save(tmp_path / "s.json")
  assert MemoryStructure.load(tmp_path / "s.json") == v1
  v2 = v1.revise({"observers.2": None, "files.4": None}, "drop repetition and inventory")
  assert (v2.version, v2.parent) == (2, 1) and len(v2.observers) == 2
  assert "inventory.txt" not in [f.name for f in v2.files]
  assert "- files[inventory.txt].name" in v2.changes
  assert "strategy.txt" not in v2.changes


@pytest.mark.parametrize("changes, field", [
    ({"plan.nonsense": 1}, "plan.nonsense"),
    ({"files.99.content": "x"}, "files.99.content"),
    ({"version": 7}, "version"),
    ({"plan.user": "{file_index}"}, "plan.user"),
])
def test_revise_rejects_bad_changes(base, changes, field):
  with pytest.raises(StructureError) as e:
    base.revise(changes, "try")
  assert e.value.field == field
  with pytest.raises(StructureError, match="note"):
    base.revise({}, "  ")


def test_prompt_text_diff_is_unified(base):
  b = dataclasses.replace(base, game_rules=base.game_rules.replace("survive", "thrive"))
  d = structure_diff(base, b)
  assert d.startswith("~ game_rules:") and "-as deep as you can and survive." in d
  assert "+as deep as you can and thrive." in d
  assert structure_diff(base, base) == "(no changes)"
  json.dumps(base.to_dict())


def test_spec_reference_lists_every_bound():
  ref = spec_reference()
  for needle in ("{observation}", "max_file_bytes 64..1048576", "map_passability",
                 "<|UPSERT_MAP|>key|value<|END|>", "plan.max_iterations", "pins[i].view"):
    assert needle in ref, needle
