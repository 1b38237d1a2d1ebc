"""Readable action names for NLE-based games, offered and accepted as one list.

A name maps to one keystroke. Named commands ("north", "far east", "eat",
"kick", "esc", ...) come first; then single keys for prompts and menus:
letters (inventory letters, menu entries), digits (counts, menu choices) and a
few symbols ("-" for bare hands / nothing, "*" for "show all", "$" for gold,
"<" ">" "." to pick and confirm a map position, e.g. after "travel").
A game only offers the names whose keystroke its NLE action set contains, so
everything offered can be sent, and nothing else is accepted.

Matching: a one-character name matches exactly (inventory letters are case
sensitive); longer names match case-insensitively with "_"/"-" read as spaces
(`normalize_action_name`). Commands that leave the game (quit, save, shell) or
only change interface options are not offered.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

from automem.envs.base import normalize_action_name


def _meta(c: str) -> int:
  return 0x80 | ord(c)


def _ctrl(c: str) -> int:
  return 0x1F & ord(c)


# name -> (keystroke, description). Order is the order offered in prompts.
NAMED_ACTIONS: dict[str, tuple[int, str]] = {
    "north": (ord("k"), "move north"),
    "east": (ord("l"), "move east"),
    "south": (ord("j"), "move south"),
    "west": (ord("h"), "move west"),
    "northeast": (ord("u"), "move northeast"),
    "southeast": (ord("n"), "move southeast"),
    "southwest": (ord("b"), "move southwest"),
    "northwest": (ord("y"), "move northwest"),
    "far north": (ord("K"), "move north until something interesting"),
    "far east": (ord("L"), "move east until something interesting"),
    "far south": (ord("J"), "move south until something interesting"),
    "far west": (ord("H"), "move west until something interesting"),
    "far northeast": (ord("U"), "move northeast until something interesting"),
    "far southeast": (ord("N"), "move southeast until something interesting"),
    "far southwest": (ord("B"), "move southwest until something interesting"),
    "far northwest": (ord("Y"), "move northwest until something interesting"),
    "up": (ord("<"), "go up a staircase (stand on '<')"),
    "down": (ord(">"), "go down a staircase (stand on '>')"),
    "wait": (ord("."), "rest one turn"),
    "search": (ord("s"), "search around for hidden doors and passages"),
    "open": (ord("o"), "open a door (then give a direction)"),
    "close": (ord("c"), "close a door (then give a direction)"),
    "kick": (_ctrl("d"), "kick something (then give a direction)"),
    "fight": (ord("F"), "fight in a direction, even if nothing is seen there (then give a direction)"),
    "fire": (ord("f"), "fire from the quiver (then give a direction)"),
    "throw": (ord("t"), "throw an item (then an item letter and a direction)"),
    "eat": (ord("e"), "eat something (then an item letter)"),
    "quaff": (ord("q"), "drink a potion (then an item letter)"),
    "read": (ord("r"), "read a scroll or spellbook (then an item letter)"),
    "wield": (ord("w"), "wield a weapon (then an item letter, or - for bare hands)"),
    "wear": (ord("W"), "wear armour (then an item letter)"),
    "takeoff": (ord("T"), "take off armour (then an item letter)"),
    "takeoffall": (ord("A"), "take off all armour"),
    "puton": (ord("P"), "put on a ring or amulet (then an item letter)"),
    "remove": (ord("R"), "remove a ring or amulet (then an item letter)"),
    "apply": (ord("a"), "apply (use) a tool (then an item letter)"),
    "zap": (ord("z"), "zap a wand (then an item letter and a direction)"),
    "cast": (ord("Z"), "cast a spell (then a spell letter)"),
    "pray": (_meta("p"), "pray to your god for help"),
    "pickup": (ord(","), "pick up what is here"),
    "drop": (ord("d"), "drop an item (then an item letter)"),
    "droptype": (ord("D"), "drop several items (then choose in the menu)"),
    "look": (ord(":"), "look at what is here"),
    "inventory": (ord("i"), "show the inventory"),
    "engrave": (ord("E"), "engrave on the floor (then an item letter, - for fingers)"),
    "pay": (ord("p"), "pay a shopkeeper"),
    "loot": (_meta("l"), "loot a box on the floor"),
    "force": (_meta("f"), "force a lock"),
    "untrap": (_meta("u"), "disarm a trap"),
    "offer": (_meta("o"), "offer a sacrifice on an altar"),
    "dip": (_meta("d"), "dip an item into something"),
    "sit": (_meta("s"), "sit down"),
    "rub": (_meta("r"), "rub a lamp or a stone"),
    "jump": (_meta("j"), "jump to a location"),
    "chat": (_meta("c"), "talk to someone"),
    "enhance": (_meta("e"), "advance or check weapon skills"),
    "invoke": (_meta("i"), "invoke an artifact's power"),
    "monster": (_meta("m"), "use a monster ability (when polymorphed)"),
    "ride": (_meta("R"), "ride a saddled creature"),
    "turn": (_meta("t"), "turn undead"),
    "tip": (_meta("T"), "tip over a container"),
    "wipe": (_meta("w"), "wipe your face"),
    "swap": (ord("x"), "swap primary and secondary weapons"),
    "twoweapon": (ord("X"), "toggle two-weapon combat"),
    "quiver": (ord("Q"), "choose ammunition for the quiver (then an item letter)"),
    "travel": (ord("_"), "travel to a map location (then < or > to pick a staircase, then . to confirm)"),
    "call": (ord("C"), "name a monster or object"),
    "teleport": (_ctrl("t"), "teleport (if you can)"),
    "attributes": (_ctrl("x"), "show your attributes"),
    "overview": (_ctrl("o"), "show an overview of the dungeon"),
    "esc": (27, "cancel a prompt or close a menu"),
    "enter": (ord("\r"), "confirm a menu or a prompt"),
    "space": (ord(" "), "next page of a menu"),
}

# Single keys for item prompts, menus and counts.
KEY_ACTIONS: tuple[str, ...] = tuple(string.ascii_lowercase + string.ascii_uppercase + string.digits + "-*$<>.")
KEY_DESCRIPTION = "this key at a prompt or in a menu (item letter, menu choice, digit, map symbol)"


class ActionVocab:
  """The action names of one game, restricted to the keystrokes it accepts.

  Args:
    available_keys: the keystroke codes of the game's NLE action set.
  """

  def __init__(self, available_keys: Iterable[int]):
    keys = {int(k) for k in available_keys}
    names: dict[str, int] = {}
    desc: dict[str, str] = {}
    for name, (key, text) in NAMED_ACTIONS.items():
      if key in keys:
        names[name] = key
        desc[name] = text
    # Single keys only where the game has prompts at all (it can cancel them): a
    # movement-only MiniHack task offers no letters.
    for ch in KEY_ACTIONS if 27 in keys else ():
      if ord(ch) in keys:
        names[ch] = ord(ch)
        desc[ch] = KEY_DESCRIPTION
    self.names: tuple[str, ...] = tuple(names)
    self.descriptions = desc
    self._keys = names
    self._lookup = {normalize_action_name(n): n for n in names if len(n) > 1}

  def resolve(self, text: str) -> str | None:
    """The offered name `text` stands for, or None when it is not one."""
    if not isinstance(text, str):
      return None
    raw = text.strip()
    if len(raw) == 1:
      return raw if raw in self._keys else None
    return self._lookup.get(normalize_action_name(raw))

  def key(self, name: str) -> int:
    """The keystroke of an offered name."""
    return self._keys[name]

  def unknown_feedback(self, text: str) -> str:
    shown = text if len(text) <= 40 else text[:37] + "..."
    return (
        f"Invalid action {shown!r}: not one of this game's action names; nothing was done. "
        f"Use a name from the action list, e.g. {', '.join(self.names[:4])}, or a single item letter."
    )
