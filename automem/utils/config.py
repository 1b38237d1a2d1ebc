"""Helpers shared by the config files in `experiments/configs/`."""

from __future__ import annotations

from typing import Any


def _convert(text: str, default: Any) -> Any:
  if isinstance(default, bool):
    if text.lower() in ("1", "true", "yes", "on"):
      return True
    if text.lower() in ("0", "false", "no", "off"):
      return False
    raise ValueError(f"expected a boolean, got {text!r}")
  if default is None or isinstance(default, str):
    return text
  return type(default)(text)


def parse_arg(arg: str | None, *, lazy: bool = False, **defaults: Any) -> dict[str, Any]:
  """Parses the text after `config.py:` into a dict of variant settings.

  `"tiny,game=nethack,batch=8"` gives `{"tiny": True, "game": "nethack",
  "batch": 8}`; values are converted to the type of their default, a bare
  name sets a boolean. Unknown keys are an error unless `lazy` is true, in
  which case they are kept as strings.

  Args:
    arg: the variant string (may be None or empty).
    lazy: accept keys that have no default.
    **defaults: every accepted key with its default value.

  Returns:
    The defaults updated by `arg`.
  """
  result = dict(defaults)
  if not arg:
    return result
  for item in arg.split(","):
    item = item.strip()
    if not item:
      continue
    key, sep, value = item.partition("=")
    key = key.strip()
    if key not in defaults and not lazy:
      raise ValueError(f"unknown config variant {key!r}; known: {', '.join(sorted(defaults))}")
    if not sep:
      result[key] = True
      continue
    result[key] = _convert(value.strip(), defaults.get(key))
  return result
