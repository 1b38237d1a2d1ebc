"""MemoryStructure v1: the new fields validate with the field named, revise reaches them, the
reference is generated from the schema, overrides and modes derive valid structures."""

from __future__ import annotations

import dataclasses
import json

import pytest

from automem.memory import (
    ACTION_CHECKS,
    OBSERVERS,
    TEXTS,
    MemoryStructure,
    StructureError,
    available_structures,
    load_structure,
    resolve_structure,
    spec_reference,
)
from automem.memory.structure_reference import field_rows
from automem.memory.structure_types import spec_field

GAMES = ("crafter", "minihack", "nethack")


@pytest.fixture(scope="module")
def nethack():
  return load_structure("nethack")


@pytest.mark.parametrize("game", GAMES)
def test_evolved_structures_ship_canonical_and_use_the_features(game):
  s = load_structure(game, "evolved")
  assert f"{game}_evolved" in available_structures()
  assert resolve_structure(game, "evolved") == s == resolve_structure(game, f"{game}_evolved")
  assert resolve_structure(game, "") == load_structure(game)
  assert MemoryStructure.from_json(s.to_json()) == s
  assert s.pins or s.harness_files
  assert s.action_checks and s.action_aliases and s.observers
  assert {f.name for f in load_structure(game).files} <= {f.name for f in s.files}
  for f in s.files:  # every harness file is read-only
    if any(h.file == f.name for h in s.harness_files):
      assert f.read_only


def test_minihack_boxoban_override_applies_only_to_boxoban():
  s = load_structure("minihack", "evolved")
  s.check_tasks(["MiniHack-Boxoban-Hard-v0", "MiniHack-Corridor-R3-v0"])
  box = s.for_task("MiniHack-Boxoban-Hard-v0")
  assert box.fallback_action == "north" and "Sokoban" in box.game_rules
  assert box.modes == () and box.task_overrides == () and box.version == s.version
  assert box.texts["no_action"] != s.texts["no_action"]
  assert "~ fallback_action: \"search\" -> \"north\"" in box.changes
  assert s.for_task("MiniHack-Corridor-R3-v0") is s
  with pytest.raises(StructureError) as e:
    s.check_tasks(["MiniHack-Corridor-R3-v0"])
  assert e.value.field == "task_overrides[0].match"


def test_modes_swap_the_template_and_ops():
  s = load_structure("nethack", "evolved")
  menu = s.with_mode("menu")
  assert menu.plan.user == s.modes[0].user and menu.plan.allowed_ops == ("SEARCH", "READ", "ACTION")
  assert menu.log == s.log
  with pytest.raises(ValueError, match="no mode"):
    s.with_mode("swimming")


def test_every_schema_field_is_in_the_reference_with_an_example():
  ref = spec_reference()
  rows = field_rows(MemoryStructure)
  assert len(rows) > 50
  for path, doc, example in rows:
    name = path.strip()
    if name.split(".")[-1] in ("version", "parent", "changes", "schema", "note") and "." not in name:
      continue
    assert f"{name}: {doc}" in ref, name
    if example is not None and name != "limits":
      assert "(e.g. " in ref.split(f"{name}: {doc}", 1)[1].split("\n", 1)[0], name
  for name, d in OBSERVERS.items():
    assert f"  {name}: {d.doc}" in ref
    for key in d.params:
      assert f"    {key}: " in ref
  for kind in ACTION_CHECKS:
    assert f"  {kind}: " in ref
  for key in TEXTS:
    assert f"texts.{key}:" in ref


def test_field_examples_are_valid_values(nethack):
  """Each scalar example in the schema is accepted when revised in (so examples cannot lie)."""
  for path, value in (("history_length", 8), ("max_rejections", 2), ("fallback_action", "noop"),
                      ("files.0.keep_last", 40), ("files.0.keep_header", 1),
                      ("size_warning.max_lines", 60), ("hooks.retention", "after_log"),
                      ("action_aliases", {"go left": "west"})):
    nethack.revise({path: value}, note="example")


def _bad(base, change):
  d = base.to_dict()
  change(d)
  with pytest.raises(StructureError) as e:
    MemoryStructure.from_dict(d)
  return e.value.field, e.value.message


def _set(path, value):
  def change(d):
    node = d
    *head, last = path
    for k in head:
      node = node[k]
    node[last] = value
  return change


@pytest.mark.parametrize("change, field, needle", [
    (_set(["history_length"], "8"), "history_length", "integer"),
    (_set(["max_rejections"], 11), "max_rejections", "[0, 10]"),
    (_set(["observers"], [{"name": "telepathy", "phases": ["plan"], "params": {}}]),
     "observers[0].name", "unknown observer"),
    (_set(["observers"], [{"name": "threat", "phases": ["plan"], "params": {"range": 3}}]),
     "observers[0].params.range", "unknown parameter"),
    (_set(["observers"], [{"name": "threat", "phases": ["plan"], "params": {"hostile": "orc"}}]),
     "observers[0].params.hostile", "list"),
    (_set(["pins"], [{"file": "nowhere.txt", "phases": ["plan"]}]), "pins[0].file",
     "not one of the structure's files"),
    (_set(["pins"], [{"file": "strategy.txt", "phases": ["plan"]}]), "pins[0].phases",
     "no {pinned}"),
    (_set(["pins"], [{"file": "strategy.txt", "phases": ["log"], "view": "sideways"}]),
     "pins[0].view", "must be one of"),
    (_set(["harness_files"], [{"file": "strategy.txt", "source": "status_block"}]),
     "harness_files[0].file", "read_only"),
    (lambda d: (_set(["files", 0, "read_only"], True)(d),
                _set(["harness_files"], [{"file": "game_rules.txt", "source": "nope"}])(d)),
     "harness_files[0].source", "unknown observer"),
    (_set(["action_checks"], [{"kind": "vibes", "params": {}}]), "action_checks[0].kind",
     "unknown check"),
    (_set(["action_checks"], [{"kind": "wall_move", "params": {"moves": {"north": "up"}}}]),
     "action_checks[0].params.moves.north", "dx,dy"),
    (_set(["action_aliases"], {"go": ["north"]}), "action_aliases.go", "action name"),
    (_set(["texts", "commit"], "x" * 3000), "texts.commit", "cap"),
    (_set(["texts", "commit"], "Commit {action} now"), "texts.commit", "unknown placeholder"),
    (_set(["texts", "shout"], "HEY"), "texts.shout", "unknown text"),
    (_set(["plan", "user"], "x" * 13_000), "plan.user", "at most"),
    (_set(["plan", "user"], "{file_index}\n{pinned}\n{history}\n{observation}"), "plan.user",
     "cache order"),
    (_set(["plan", "system"], "{game} {observation}"), "plan.system", "static only"),
    (_set(["hooks", "retention"], "whenever"), "hooks.retention", "must be one of"),
    (_set(["size_warning", "phases"], ["sleep"]), "size_warning.phases", "subset"),
    (_set(["modes"], [{"name": "m", "when": "prompt_active", "phases": ["plan"]}]), "modes[0]",
     "must change"),
    (_set(["modes"], [{"name": "m", "when": "prompt_active", "phases": ["plan"],
                       "allowed_ops": ["SEARCH"]}]), "modes[0].allowed_ops", "needs ACTION"),
    (_set(["task_overrides"], [{"match": "MiniHack-*", "changes": {"plan.max_iterations": 99}}]),
     "task_overrides[0].changes.plan.max_iterations", "integer in"),
    (_set(["task_overrides"], [{"match": "MiniHack-*", "changes": {"plan.nonsense": 1}}]),
     "task_overrides[0].changes.plan.nonsense", "unknown field"),
    (_set(["files", 0, "keep_last"], -1), "files[0].keep_last", "integer"),
])
def test_bad_structures_name_the_field(nethack, change, field, needle):
  got_field, message = _bad(nethack, change)
  assert got_field == field and needle in message, (got_field, message)


def test_a_bad_revision_changes_nothing(nethack):
  before = nethack.to_json()
  with pytest.raises(StructureError) as e:
    nethack.revise({"history_length": 4, "pins.0": {"file": "ghost.txt", "phases": ["log"]}},
                   note="half a change")
  assert e.value.field == "pins[0].file"
  assert nethack.to_json() == before  # frozen; nothing half-applied


def test_revise_reaches_every_new_feature(nethack):
  plan_user = nethack.plan.user.replace("{helpers}", "{pinned}\n{helpers}")
  v1 = nethack.revise({
      "plan.user": plan_user,
      "pins.0": {"file": "strategy.txt", "phases": ["plan"], "view": "tail", "lines": 3},
      "files.6.keep_last": 20,
      "texts.no_action": "Pick an action!",
      "action_aliases.go up": "north",
      "action_checks.0": {"kind": "noop_streak", "params": {"actions": ["wait"]}},
      "size_warning.max_lines": 40,
      "observers.2": {"name": "visit_counts", "phases": ["plan"], "params": {}},
  }, note="try the v1 features")
  assert v1.version == 1 and v1.pins[0].view == "tail"
  for needle in ("+ pins[strategy.txt].view = \"tail\"", "~ texts.no_action:",
                 "+ action_aliases.go up = \"north\"", "~ size_warning.max_lines: 0 -> 40"):
    assert needle in v1.changes, v1.changes
  v2 = v1.revise({"pins.0": None}, note="drop the pin")
  assert v2.pins == ()
  json.dumps(v2.to_dict())


def test_spec_field_needs_docs():
  @dataclasses.dataclass(frozen=True)
  class Tiny:
    x: int = spec_field("a number", 3, 0)

  assert dataclasses.fields(Tiny)[0].metadata == {"doc": "a number", "example": 3}


@pytest.mark.parametrize("field, value", [("max_files", "9"), ("max_read_chars", 10**9),
                                          ("max_tail_lines", True)])
def test_mistyped_store_limits_name_their_field(field, value):
  data = load_structure("crafter").to_dict()
  data["limits"][field] = value
  with pytest.raises(StructureError) as err:
    MemoryStructure.from_dict(data)
  assert err.value.field == f"limits.{field}"
