"""Tokenizer and chat template: identical to transformers; tiny tokenizer and checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from transformers import AutoTokenizer

from automem.models import Tokenizer, load_hf_checkpoint, make_tiny_checkpoint, tiny_tokenizer
from automem.models import tiny as tiny_lib
from automem.models.tiny import COMMAND_TOKENS

# A Qwen2.5-style template (default system prompt, tools via tojson, whitespace control).
QWEN25_STYLE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>assistant\\n' }}
        {%- if message.reasoning_content %}
            {{- '<think>\\n' + message.reasoning_content.strip('\\n') + '\\n</think>\\n\\n' }}
        {%- endif %}
        {{- message.content + '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

CHATS = [
    [{"role": "user", "content": "You see a tree 3 steps north. Héllo ✓"}],
    [{"role": "system", "content": "Keep notes."},
     {"role": "user", "content": "<|READ|>notes.md<|END|>"},
     {"role": "assistant", "content": "<|APPEND|>notes.md|wood: 3<|END|><|DONE|><|END|>"},
     {"role": "user", "content": "  spaces\n\nand newlines  "}],
    [{"role": "user", "content": "plan?"},
     {"role": "assistant", "content": "<|ACTION|>noop<|END|>", "reasoning": "\nwait a bit\n"},
     {"role": "user", "content": "ok"}],
]
TOOLS = [{"type": "function", "function": {"name": "move", "parameters": {"dir": "ü"}}}]


@pytest.fixture(scope="module")
def ckpt_dir(tiny_checkpoint_dir):
  return tiny_checkpoint_dir


def test_tiny_tokenizer_roundtrip_and_command_tokens(tiny_tokenizer):
  for t in (*COMMAND_TOKENS, "<|im_start|>", "<|im_end|>"):
    ids = tiny_tokenizer.encode(t)
    assert len(ids) == 1, t
  text = "<|APPEND|>notes.md|Found iron at (3, -4) — ☃ 日本<|END|>\n\tdone"
  assert tiny_tokenizer.decode(tiny_tokenizer.encode(text)) == text
  assert tiny_tokenizer.decode(tiny_tokenizer.encode("<|im_end|>"), skip_special_tokens=True) == ""
  assert tiny_tokenizer.token_to_id("<|im_end|>") in tiny_tokenizer.eos_token_ids
  ids, spans = tiny_tokenizer.encode_with_offsets(text)
  assert ids == tiny_tokenizer.encode(text)
  assert text[spans[0][0] : spans[0][1]] == "<|APPEND|>"
  assert spans[-1][1] == len(text)


def test_tiny_tokenizer_is_cached_by_recipe(tmp_path):
  path = tiny_lib.tiny_tokenizer_dir(cache_dir=str(tmp_path))
  stamp = os.stat(os.path.join(path, "tokenizer.json")).st_mtime_ns
  assert tiny_lib.tiny_tokenizer_dir(cache_dir=str(tmp_path)) == path
  assert os.stat(os.path.join(path, "tokenizer.json")).st_mtime_ns == stamp
  assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]  # no temp dirs left
  other = tiny_lib.tiny_tokenizer_dir(512, cache_dir=str(tmp_path))
  assert other != path
  assert tiny_lib.tiny_tokenizer(512, cache_dir=str(tmp_path)).vocab_size <= 512


@pytest.mark.parametrize("template", ["tiny", "qwen25"])
def test_chat_template_matches_transformers(ckpt_dir, tmp_path, template):
  path = ckpt_dir
  if template == "qwen25":
    path = str(tmp_path / "q25")
    shutil.copytree(ckpt_dir, path)
    cfg_file = os.path.join(path, "tokenizer_config.json")
    with open(cfg_file) as f:
      cfg = json.load(f)
    cfg["chat_template"] = QWEN25_STYLE
    with open(cfg_file, "w") as f:
      json.dump(cfg, f)
  ours = Tokenizer.from_pretrained(path)
  ref = AutoTokenizer.from_pretrained(path, local_files_only=True)
  for chat in CHATS:
    for gen in (True, False):
      kw = dict(add_generation_prompt=gen)
      text = ref.apply_chat_template(chat, tokenize=False, **kw)
      assert ours.apply_chat_template(chat, tokenize=False, **kw) == text
      ids = ref.apply_chat_template(chat, tokenize=True, return_dict=False, **kw)
      assert ours.apply_chat_template(chat, **kw) == list(ids)
  if template == "qwen25":
    text = ref.apply_chat_template(CHATS[0], tools=TOOLS, tokenize=False, add_generation_prompt=True)
    assert ours.apply_chat_template(CHATS[0], tools=TOOLS, tokenize=False) == text
    assert '"dir": "ü"' in text
  assert ours.eos_token_ids[0] == ref.eos_token_id


def test_tiny_checkpoint_loads_in_both(ckpt_dir):
  import transformers

  model = load_hf_checkpoint(ckpt_dir)
  assert model.config.family == "qwen2"
  hf = transformers.AutoModelForCausalLM.from_pretrained(ckpt_dir, local_files_only=True)
  assert hf.config.num_hidden_layers == model.config.num_layers
  assert hf.config.eos_token_id == list(model.config.eos_token_id)


def test_make_tiny_checkpoint_needs_no_torch(tmp_path):
  code = (
      "import sys; from automem.models import make_tiny_checkpoint, load_hf_checkpoint;"
      f"p = make_tiny_checkpoint({str(tmp_path)!r}, 'qwen3', num_layers=1);"
      "m = load_hf_checkpoint(p); assert m.config.family == 'qwen3' and m.config.num_layers == 1;"
      "assert 'torch' not in sys.modules, 'torch was imported'"
  )
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                     timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  assert set(os.listdir(tmp_path)) >= {"config.json", "model.safetensors", "tokenizer.json",
                                       "tokenizer_config.json"}


def test_make_tiny_checkpoint_is_deterministic(tmp_path):
  a = make_tiny_checkpoint(str(tmp_path / "a"), "qwen2", seed=5, num_layers=1)
  b = make_tiny_checkpoint(str(tmp_path / "b"), "qwen2", seed=5, num_layers=1)
  with open(os.path.join(a, "model.safetensors"), "rb") as fa, open(
      os.path.join(b, "model.safetensors"), "rb") as fb:
    assert fa.read() == fb.read()
  assert tiny_tokenizer().vocab_size <= 1024


def test_pretraining_the_tiny_model_lowers_its_loss(tiny_tokenizer):
  import math

  from automem.models import init_model, tiny_config
  from automem.models.tiny import pretrain_tiny_model

  model = init_model(tiny_config("qwen2", num_layers=1), seed=0)
  loss = pretrain_tiny_model(model, tiny_tokenizer, 40, batch_size=4, head=32, tail=32,
                             learning_rate=1e-2, num_episodes=4)
  assert loss < 0.8 * math.log(1024)  # a random model sits at ~ln(vocab)
