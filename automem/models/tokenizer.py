"""Tokenizer + chat template from a checkpoint directory, rendered as transformers does.

Uses the `tokenizers` library for the byte-level BPE and jinja2 for the chat template,
with the same sandboxed environment settings transformers' `apply_chat_template` uses
(trim_blocks, lstrip_blocks, loopcontrols, its `tojson`, `raise_exception`,
`strftime_now`), so rendered prompts and token ids are identical (tested).
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Sequence
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import tokenizers
from jinja2.sandbox import ImmutableSandboxedEnvironment

Message = dict[str, Any]
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


class _GenerationTag(jinja2.ext.Extension):
  """Accepts `{% generation %}...{% endgeneration %}` blocks (rendered as their body)."""

  tags = {"generation"}  # noqa: RUF012

  def parse(self, parser):
    lineno = next(parser.stream).lineno
    body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
    return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

  def _render(self, caller):
    return caller()


def _raise_exception(message: str):
  raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
  return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                    sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
  return datetime.datetime.now().strftime(fmt)


_TEMPLATE_CACHE: dict[str, jinja2.Template] = {}


def compile_chat_template(template: str) -> jinja2.Template:
  if template not in _TEMPLATE_CACHE:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    _TEMPLATE_CACHE[template] = env.from_string(template)
  return _TEMPLATE_CACHE[template]


def _token_content(x: Any) -> str | None:
  if isinstance(x, dict):
    return x.get("content")
  return x


def _as_id_list(x: Any) -> list[int]:
  if x is None:
    return []
  return [int(i) for i in (x if isinstance(x, list) else [x])]


class Tokenizer:
  """Byte-level BPE tokenizer with special tokens, EOS ids and a chat template.

  `tok` (the underlying `tokenizers.Tokenizer`) is public and stable.
  """

  def __init__(
      self,
      tokenizer: tokenizers.Tokenizer,
      chat_template: str | None = None,
      special_tokens: dict[str, str | None] | None = None,
      extra_eos_ids: Sequence[int] = (),
  ):
    self.tok = tokenizer
    self.chat_template = chat_template
    self.special_tokens = {k: v for k, v in (special_tokens or {}).items() if v is not None}
    eos = []
    if "eos_token" in self.special_tokens:
      i = self.token_to_id(self.special_tokens["eos_token"])
      if i is not None:
        eos.append(i)
    for i in extra_eos_ids:
      if i not in eos:
        eos.append(int(i))
    self.eos_token_ids: list[int] = eos

  # -- loading / saving ---------------------------------------------------------------

  @classmethod
  def from_pretrained(cls, path: str) -> Tokenizer:
    """Loads tokenizer.json, tokenizer_config.json and the chat template from `path`."""
    tj = os.path.join(path, "tokenizer.json")
    if not os.path.exists(tj):
      raise FileNotFoundError(f"no tokenizer.json in {path}")
    tok = tokenizers.Tokenizer.from_file(tj)
    cfg = _read_json(os.path.join(path, "tokenizer_config.json"))
    template = cfg.get("chat_template")
    if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
      named = {t["name"]: t["template"] for t in template}
      template = named.get("default", next(iter(named.values()), None))
    jinja_file = os.path.join(path, "chat_template.jinja")
    if os.path.exists(jinja_file):
      with open(jinja_file) as f:
        template = f.read()
    elif os.path.exists(os.path.join(path, "chat_template.json")):
      template = _read_json(os.path.join(path, "chat_template.json")).get("chat_template", template)
    stmap = _read_json(os.path.join(path, "special_tokens_map.json"))
    specials = {}
    for k in ("bos_token", "eos_token", "unk_token", "pad_token"):
      v = _token_content(cfg.get(k, stmap.get(k)))
      specials[k] = v
    extra = []
    for f in ("generation_config.json", "config.json"):
      extra += _as_id_list(_read_json(os.path.join(path, f)).get("eos_token_id"))
    return cls(tok, template, specials, extra_eos_ids=extra)

  def save(self, path: str) -> None:
    """Writes files both this class and transformers' AutoTokenizer can load."""
    os.makedirs(path, exist_ok=True)
    self.tok.save(os.path.join(path, "tokenizer.json"))
    cfg: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 32768,
        "clean_up_tokenization_spaces": False,
        **self.special_tokens,
    }
    if self.chat_template is not None:
      cfg["chat_template"] = self.chat_template
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
      json.dump(cfg, f, indent=2, ensure_ascii=False)
    with open(os.path.join(path, "special_tokens_map.json"), "w") as f:
      json.dump(self.special_tokens, f, indent=2)

  # -- basic ops ------------------------------------------------------------------------

  @property
  def vocab_size(self) -> int:
    return self.tok.get_vocab_size(with_added_tokens=True)

  @property
  def pad_token_id(self) -> int:
    pad = self.special_tokens.get("pad_token")
    i = self.token_to_id(pad) if pad else None
    return i if i is not None else (self.eos_token_ids[0] if self.eos_token_ids else 0)

  @property
  def eos_token_id(self) -> int | None:
    return self.eos_token_ids[0] if self.eos_token_ids else None

  def token_to_id(self, token: str) -> int | None:
    return self.tok.token_to_id(token)

  def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
    return self.tok.encode(text, add_special_tokens=add_special_tokens).ids

  def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and each token's (start, end) character span in `text` (for loss masks)."""
    enc = self.tok.encode(text, add_special_tokens=False)
    return list(enc.ids), [tuple(o) for o in enc.offsets]

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [e.ids for e in self.tok.encode_batch(list(texts), add_special_tokens=False)]

  def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
    return self.tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

  # -- chat -----------------------------------------------------------------------------

  def render_chat(
      self, messages: Sequence[Message], add_generation_prompt: bool = True, **kwargs: Any
  ) -> str:
    """The prompt text transformers' `apply_chat_template(..., tokenize=False)` renders."""
    if self.chat_template is None:
      raise ValueError("this tokenizer has no chat template")
    msgs = []
    for m in messages:
      m = dict(m)
      if "role" not in m:
        raise ValueError(f"chat message without a role: {m!r}")
      # As transformers: reasoning given under any of its names is visible under all of them.
      reasoning = next((m[k] for k in _REASONING_FIELDS if m.get(k) is not None), None)
      if reasoning is not None:
        m = {"thinking": reasoning, **m, "reasoning_content": reasoning}
      msgs.append(m)
    tmpl = compile_chat_template(self.chat_template)
    tools = kwargs.pop("tools", None)
    documents = kwargs.pop("documents", None)
    context = {**self.special_tokens, **kwargs}
    return tmpl.render(messages=msgs, tools=tools, documents=documents,
                       add_generation_prompt=add_generation_prompt, **context)

  def apply_chat_template(
      self,
      messages: Sequence[Message],
      add_generation_prompt: bool = True,
      tokenize: bool = True,
      **kwargs: Any,
  ) -> list[int] | str:
    """Renders `messages` and tokenizes without adding special tokens (as transformers)."""
    text = self.render_chat(messages, add_generation_prompt=add_generation_prompt, **kwargs)
    return self.encode(text) if tokenize else text


def _read_json(path: str) -> dict[str, Any]:
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)
