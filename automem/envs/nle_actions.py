"""Readable action names for NLE-based games: the offered list and its accepted aliases.

A name maps to one keystroke. Named commands ("north", "far east", "eat",
"kick", "esc", ...) come first; then single keys for prompts and menus:
letters (inventory letters, menu entries), digits (counts, menu choices) and a
few symbols ("-" for bare hands / nothing, "*" for "show all", "$" for gold,
"<" ">" "." to pick and confirm a map position, e.g. after "travel").
A game only offers the names whose keystroke its NLE action set contains, so
everything offered can be sent, and nothing else is accepted.

Matching: a one-character name matches exactly (inventory letters are case
sensitive); longer names match case-insensitively with "_"/"-" and spaces
ignored (`normalize_action_name`). Every name of BALROG's action space is
accepted as the same keystroke (`ALIASES` for those we name differently, e.g.
"more" is "enter"), and a 16-point direction word as the nearest of the 8
(`COMPASS_16`). A name may carry the answers to its prompts ("wield -",
"zap f north", "engrave - Elbereth"): `parse` reads them, the env sends them
only while the game asks. Commands that leave the game (quit, save) or only
change interface options are not offered. docs/balrog_compatibility.md lists
every difference from BALROG's action handling.
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Iterable

from automem.envs.base import ActionCheck, normalize_action_name


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
    "move": (ord("m"), "move one step without picking anything up or fighting (then a direction)"),
    "movefar": (ord("M"), "move far without picking anything up or fighting (then a direction)"),
    "rush": (ord("g"), "rush in a direction until something interesting (then a direction)"),
    "rush2": (ord("G"), "rush in a direction, past branching corridors (then a direction)"),
    "seeall": (ord("*"), "list the items in use (wielded, worn, ...)"),
    "seeweapon": (ord(")"), "show the wielded weapon"),
    "seearmor": (ord("["), "show the armour being worn"),
    "seerings": (ord("="), "show the rings being worn"),
    "seeamulet": (ord('"'), "show the amulet being worn"),
    "seetools": (ord("("), "show the tools in use"),
    "seegold": (ord("$"), "count your gold"),
    "seespells": (ord("+"), "list the spells you know"),
    "seetrap": (ord("^"), "show the type of an adjacent trap (then a direction)"),
    "inventtype": (ord("I"), "show the inventory items of one class (then choose it in the menu)"),
    "adjust": (_meta("a"), "change an item's inventory letter (then item letters)"),
    "annotate": (_meta("A"), "leave a note about the level (then type the text)"),
    "esc": (27, "cancel a prompt or close a menu"),
    "enter": (ord("\r"), "confirm a menu or a prompt"),
    "space": (ord(" "), "next page of a menu"),
}

# Single keys for item prompts, menus and counts.
KEY_ACTIONS: tuple[str, ...] = tuple(string.ascii_lowercase + string.ascii_uppercase + string.digits + "-*$<>.")
KEY_DESCRIPTION = "this key at a prompt or in a menu (item letter, menu choice, digit, map symbol)"

# BALROG's names (the NLE language wrapper's) that differ from ours, accepted as the same
# keystroke: alias -> key. Offered names with the same key list them as "also: ...".
ALIASES: dict[str, int] = {
    "more": ord("\r"),
    "turnundead": _meta("t"),
    "minus": ord("-"),
    "apos": ord("'"),
    "dollar": ord("$"),
    "plus": ord("+"),
    "zero": ord("0"), "one": ord("1"), "two": ord("2"), "three": ord("3"), "four": ord("4"),
    "five": ord("5"), "six": ord("6"), "seven": ord("7"), "eight": ord("8"), "nine": ord("9"),
    # Accepted because BALROG's NetHack action space has them; they change nothing in NLE
    # ("#shell command not available", the version line), so they are not offered.
    "shell": ord("!"),
    "versionshort": ord("v"),
}

# BALROG's NetHack action space (balrog/environments/nle/base.py at af7d1f1): the NLE
# language wrapper's name of each of NLE's USEFUL_ACTIONS, then single letters and digits
# (it lists "00".."99" too, but its wrapper raises on them; they are refused here with
# feedback). Every name here is accepted, as the same keystroke.
BALROG_NETHACK_NAMES: tuple[str, ...] = (
    "north", "east", "south", "west", "northeast", "southeast", "southwest", "northwest",
    "far north", "far east", "far south", "far west", "far northeast", "far southeast",
    "far southwest", "far northwest", "up", "down", "wait", "more", "adjust", "apply",
    "attributes", "call", "cast", "chat", "close", "dip", "drop", "droptype", "eat", "engrave",
    "enhance", "esc", "fight", "fire", "force", "inventory", "inventtype", "invoke", "jump",
    "kick", "look", "loot", "monster", "move", "movefar", "offer", "open", "pay", "pickup",
    "pray", "puton", "quaff", "quiver", "read", "remove", "ride", "rub", "rush", "rush2",
    "search", "seearmor", "seerings", "seetools", "seetrap", "seeweapon", "shell", "sit",
    "swap", "takeoff", "takeoffall", "throw", "tip", "turnundead", "twoweapon", "untrap",
    "versionshort", "wear", "wield", "wipe", "zap", "seespells", "seeamulet", "seegold", "space",
)
# Names BALROG's NetHack instruction prompt lists beyond its action space (it answers them
# with its default action, esc); accepted here as what they name.
BALROG_PROMPT_NAMES: tuple[str, ...] = ("annotate", "overview", "teleport", "travel", "minus", "apos")
# BALROG's MiniHack action names (balrog/environments/minihack/__init__.py); a task offers
# those its action set has.
BALROG_MINIHACK_NAMES: tuple[str, ...] = (
    "north", "east", "south", "west", "northeast", "southeast", "southwest", "northwest",
    "far north", "far east", "far south", "far west", "far northeast", "far southeast",
    "far southwest", "far northwest", "up", "down", "wait", "more", "apply", "close", "open",
    "eat", "force", "kick", "loot", "pickup", "pray", "puton", "quaff", "search", "zap",
)

# BALROG describes places with 16 compass points ("westnorthwest"); NetHack moves in 8. On
# the 16-point rose such a word lies halfway between two of the 8; it is read as the one
# named first, which in BALROG's wording is the axis of the larger offset (2 west and 1
# north is "westnorthwest").
COMPASS_16: dict[str, str] = {
    "northnortheast": "north", "eastnortheast": "east", "eastsoutheast": "east",
    "southsoutheast": "south", "southsouthwest": "south", "westsouthwest": "west",
    "westnorthwest": "west", "northnorthwest": "north",
}
# Words accepted as an argument besides single keys: the move directions name the
# direction keys (NetHack's "In what direction?" takes them), "up"/"down" are < and >.
_DIRECTION_WORDS = ("north", "east", "south", "west", "northeast", "southeast", "southwest",
                    "northwest", "up", "down")
# BALROG's names of single keys, accepted as answers too ("wield minus").
_KEY_WORDS: dict[str, int] = {
    w: k for w, k in ALIASES.items() if k < 128 and w not in ("more", "shell", "versionshort")
} | {"space": ord(" ")}
# Commands whose prompt ends in a line of text: words after them are typed, then Enter.
TEXT_COMMANDS = frozenset({"engrave", "annotate", "call"})
MAX_ARGUMENTS = 6  # keys or text pieces after a command name, at most
MAX_TEXT = 80  # characters typed at a text prompt, at most


@dataclasses.dataclass(frozen=True)
class Argument:
  """One answer to a prompt, carried after a command name ("wield -", "zap g north").

  Attributes:
    text: as the model wrote it.
    keys: the keystrokes that answer the prompt (text is followed by Enter).
    typed: free text for a text prompt (engrave, annotate, call), sent only there.
  """

  text: str
  keys: tuple[int, ...]
  typed: bool = False


@dataclasses.dataclass(frozen=True)
class ParsedAction:
  """An action text read as one command key and the answers to its prompts.

  Attributes:
    name: the name the command key was chosen by (an offered name or an alias).
    key: the command's keystroke.
    arguments: answers to send, one by one, while the game keeps asking.
    notes: how the text was read, when not literally (16-point directions).
  """

  name: str
  key: int
  arguments: tuple[Argument, ...] = ()
  notes: tuple[str, ...] = ()


def _is_word(token: str) -> bool:
  """A token that may be part of a command name: letters/digits at both ends."""
  return len(token) > 1 and token[0].isalnum() and token[-1].isalnum()


def _squash(text: str) -> str:
  return normalize_action_name(text).replace(" ", "")


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
    self.accepts_letters = any(c in names for c in string.ascii_letters)
    self._keys = dict(names)
    self._all_keys = keys
    by_key = {k: n for n, k in reversed(list(names.items())) if len(n) > 1}
    aliases = {}
    also: dict[str, list[str]] = {}
    for alias, key in ALIASES.items():
      if key in keys:
        target = by_key.get(key)
        aliases[alias] = target or alias
        self._keys.setdefault(alias, key)
        if target:
          desc[target] += f" (also: {alias})"
          also.setdefault(target, []).append(alias)
    self.aliases = aliases  # accepted alias -> the name it stands for
    # ActionReader: offered name -> "also: <aliases>", shown next to it in the action list.
    self.hints = {name: "also: " + ", ".join(a) for name, a in also.items()}
    self.descriptions = desc
    self._lookup = {_squash(n): n for n in names if len(n) > 1}
    self._lookup.update({_squash(a): n for a, n in aliases.items()})

  def _word(self, text: str) -> tuple[str, str] | None:
    """(name, note) for a whole command name, its alias or a 16-point direction."""
    squashed = _squash(text)
    name = self._lookup.get(squashed)
    if name is not None:
      return name, ""
    far = squashed.startswith("far")
    target = COMPASS_16.get(squashed[3:] if far else squashed)
    name = self._lookup.get(("far" if far else "") + target) if target else None
    if name is None:
      return None
    return name, (
        f"{text.strip()!r} is not one of NetHack's 8 directions; it was taken as {name!r}: "
        f"of the two nearest of them, the one named first."
    )

  def check(self, text: str) -> ActionCheck:
    """`parse` as an `ActionCheck` (the ActionReader protocol): an accepted text is sent as
    written (a mere case or spacing variant of a name as the name), so its arguments and
    aliases reach `step`; a refused one carries the feedback
    `step` would give, and its command name when only its arguments were refused."""
    parsed = self.parse(text)
    if isinstance(parsed, ParsedAction):
      plain = not parsed.arguments and _squash(text) == _squash(parsed.name)
      return ActionCheck(parsed.name if plain else text.strip(), parsed.name, " ".join(parsed.notes))
    head = self._head(text.split()) if isinstance(text, str) else None
    return ActionCheck(None, head[1][0] if head else None, parsed)

  def resolve(self, text: str) -> str | None:
    """The name a whole action text stands for (no arguments), or None."""
    parsed = self.parse(text)
    return parsed.name if isinstance(parsed, ParsedAction) and not parsed.arguments else None

  def key(self, name: str) -> int:
    """The keystroke of an offered name or an alias."""
    return self._keys[name]

  def parse(self, text: str) -> ParsedAction | str:
    """Reads an action text; a ParsedAction, or the feedback for a text it refuses.

    The text is a command name (aliases, case, "_"/"-" and 16-point directions
    accepted), a single key, or a name followed by answers to its prompts
    ("wield -", "zap g north", "engrave - Elbereth"). An answer that is not a key
    or a direction word is refused with the whole action, so nothing is sent that
    the model did not ask for.
    """
    if not isinstance(text, str):
      return self.unknown_feedback(repr(text))
    raw = text.strip()
    if len(raw) == 1:
      return ParsedAction(raw, self._keys[raw]) if raw in self._keys else self.unknown_feedback(raw)
    tokens = raw.split()
    head = self._head(tokens)
    if head is None:
      return self.unknown_feedback(raw)
    k, (name, note) = head
    notes = [note] if note else []
    arguments: list[Argument] = []
    for i in range(k, len(tokens)):
      token = tokens[i]
      if len(token) == 1 and ord(token) in self._all_keys:
        arguments.append(Argument(token, (ord(token),)))
      elif (word := self._argument_word(token)) is not None:
        key, note = word
        arguments.append(Argument(token, (key,)))
        notes += [note] if note else []
      elif name in TEXT_COMMANDS:
        typed = raw.split(None, i)[i]
        codes = tuple(ord(c) for c in typed)
        if len(typed) > MAX_TEXT or not all(c in self._all_keys for c in codes):
          return self._argument_feedback(raw, name, typed, f"text of at most {MAX_TEXT} plain characters")
        arguments.append(Argument(typed, (*codes, ord("\r")), typed=True))
        break
      else:
        return self._argument_feedback(raw, name, token, "a single key (an item letter, -, a digit) or a direction")
    if len(arguments) > MAX_ARGUMENTS:
      return self._argument_feedback(raw, name, " ".join(a.text for a in arguments), f"at most {MAX_ARGUMENTS} answers")
    return ParsedAction(name, self._keys[name], tuple(arguments), tuple(notes))

  def _head(self, tokens: list[str]) -> tuple[int, tuple[str, str]] | None:
    """(k, (name, note)) for the longest leading run of k words that names a command."""
    for k in range(len(tokens), 0, -1):
      if all(_is_word(t) for t in tokens[:k]):
        hit = self._word(" ".join(tokens[:k]))
        if hit is not None:
          return k, hit
    return None

  def _argument_word(self, token: str) -> tuple[int, str] | None:
    """(key, note) of a word that names one key as an answer: a direction or a key's name."""
    hit = self._word(token)
    if hit is not None and hit[0] in _DIRECTION_WORDS:
      return self._keys[hit[0]], hit[1]
    key = _KEY_WORDS.get(_squash(token))
    return (key, "") if key in self._all_keys else None

  def _argument_feedback(self, raw: str, name: str, bad: str, wanted: str) -> str:
    return (
        f"Invalid action {self._shown(raw)}: {bad!r} cannot be passed to the prompt of {name!r}, "
        f"which takes {wanted}; nothing was done. Send {name!r} alone and answer the prompt "
        "in the next action, or put the answer after the name (e.g. 'wield -', 'zap f north')."
    )

  @staticmethod
  def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")

  def unknown_feedback(self, text: str) -> str:
    """The feedback for a text that names no action of this game."""
    example = ", ".join(n for n in self.names[:4])
    letters = " or a single item letter at a prompt" if self.accepts_letters else ""
    return (
        f"Invalid action {self._shown(text)}: not one of this game's action names; nothing was done. "
        f"Use a name from the action list, e.g. {example}{letters}."
    )
