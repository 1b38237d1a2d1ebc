"""Masked SFT data for Loop 2: turns -> tokens with a command-only loss mask -> packed rows.

Tokens of one example are the chat-templated prompt (the turn's messages with
the generation prompt) followed by the completion encoded on its own -- the
same token stream the model produced at rollout time -- and, optionally, the
end-of-turn token. The loss weight is nonzero only on completion tokens that
overlap the character span of a trained memory command:

* every op except those in `exclude_ops` (default: ACTION, the game action,
  which stays with the base model) -- DONE is trained, since ending LOG is
  itself a memory decision;
* failed commands and parse errors (`ok` false) are not trained unless
  `train_failed`;
* prose between commands, the prompt and command results (which live in later
  turns' messages) have weight 0; the end-of-turn token has weight 0 unless
  `train_eos` (a LOG turn normally ends on a stop string, not on EOS).

Examples are packed into rows of `row_length` tokens with per-example segment
ids (1, 2, ...; 0 = padding) and positions restarting at 0, so examples never
attend to each other. An example longer than a row loses tokens from the left
of its prompt (`overflow="truncate_left"`, the completion always stays whole)
or is dropped (`overflow="drop"`, or when the completion alone does not fit);
both are counted in the statistics.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from automem.proficiency.selection import TurnRecord

FIELDS = ("inputs", "targets", "weights", "segment_ids", "positions")


class ChatTokenizer(Protocol):
  """What the dataset needs from a tokenizer."""

  def prompt_ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
    """Chat-templated prompt ending with the assistant generation prompt."""
    ...

  def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of `text` (no special tokens) and each token's character span."""
    ...

  @property
  def end_of_turn_id(self) -> int:
    ...


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
  row_length: int = 2048  # tokens per packed row (model inputs; targets are shifted by one)
  overflow: str = "truncate_left"  # "truncate_left" | "drop" for examples longer than a row
  exclude_ops: tuple[str, ...] = ("ACTION",)  # ops whose tokens are never trained
  train_failed: bool = False  # train commands whose execution failed (ok=false)
  append_eos: bool = True  # end each completion with the end-of-turn token
  train_eos: bool = False  # give the end-of-turn token loss weight
  val_fraction: float = 0.15  # share of episodes held out for validation
  seed: int = 0  # seed of the episode split


@dataclasses.dataclass
class Example:
  episode_id: str
  ids: np.ndarray  # [n] int32
  weights: np.ndarray  # [n] float32, weight of predicting ids[i] (ids[0]'s is unused)
  prompt_len: int
  ops: collections.Counter


def command_token_weights(
    offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int, float]]) -> np.ndarray:
  """Per-token weight: the largest weight of a span the token's characters overlap."""
  w = np.zeros(len(offsets), np.float32)
  if not len(offsets) or not spans:
    return w
  off = np.asarray(offsets, np.int64).reshape(-1, 2)
  for start, end, weight in spans:
    hit = (off[:, 0] < end) & (off[:, 1] > start) & (off[:, 1] > off[:, 0])
    w = np.where(hit, np.maximum(w, weight), w)
  return w


def trained_spans(rec: TurnRecord, cfg: DatasetConfig) -> tuple[list[tuple[int, int, float]],
                                                               collections.Counter]:
  """The (start, end, weight) character spans of the commands this turn trains on."""
  commands = rec.commands
  if commands and any("span" not in c for c in commands):
    raise ValueError(f"episode {rec.episode_id} step {rec.step}: commands without spans")
  if not commands and rec.completion:
    commands = _parse_commands(rec.completion)
  spans, ops = [], collections.Counter()
  for i, c in enumerate(commands):
    if rec.selected is not None and i not in rec.selected:
      continue
    op = str(c.get("op") or "").upper()
    if not op or op in cfg.exclude_ops:
      continue
    if not c.get("ok", True) and not cfg.train_failed:
      continue
    start, end = (int(x) for x in c["span"])
    if not 0 <= start < end <= len(rec.completion):
      raise ValueError(f"episode {rec.episode_id} step {rec.step}: span {start, end} outside "
                       f"a completion of {len(rec.completion)} characters")
    spans.append((start, end, rec.weight))
    ops[op] += 1
  return spans, ops


def _parse_commands(text: str) -> list[dict[str, Any]]:
  """Falls back to the memory package's parser for turns recorded without commands."""
  from automem.memory import parse_commands  # only needed for old trajectories

  return [{"op": item.op, "span": list(item.span), "ok": not hasattr(item, "message")}
          for item in parse_commands(text)]


def tokenize_turn(rec: TurnRecord, tok: ChatTokenizer, cfg: DatasetConfig) -> Example:
  """One turn -> token ids and loss weights (see the module docstring for the rules)."""
  prompt = list(tok.prompt_ids(rec.messages))
  ids, offsets = tok.encode_with_offsets(rec.completion)
  spans, ops = trained_spans(rec, cfg)
  w = command_token_weights(offsets, spans)
  ids = list(ids)
  if cfg.append_eos:
    ids.append(tok.end_of_turn_id)
    w = np.append(w, np.float32(rec.weight if cfg.train_eos and spans else 0.0))
  return Example(
      episode_id=rec.episode_id,
      ids=np.asarray(prompt + ids, np.int32),
      weights=np.concatenate([np.zeros(len(prompt), np.float32), w]),
      prompt_len=len(prompt), ops=ops)


def fit_to_row(ex: Example, row_length: int, overflow: str) -> tuple[Example | None, bool]:
  """Returns the example fitted into `row_length + 1` tokens (or None) and whether it was cut."""
  if overflow not in ("truncate_left", "drop"):
    raise ValueError(f"overflow must be 'truncate_left' or 'drop', got {overflow!r}")
  excess = len(ex.ids) - (row_length + 1)
  if excess <= 0:
    return ex, False
  if overflow == "drop" or excess >= ex.prompt_len:
    return None, False
  return dataclasses.replace(ex, ids=ex.ids[excess:], weights=ex.weights[excess:],
                             prompt_len=ex.prompt_len - excess), True


def pack(examples: Sequence[Example], row_length: int, max_open_rows: int = 64
         ) -> dict[str, np.ndarray]:
  """Packs examples (each at most `row_length + 1` tokens) into rows, first-fit decreasing.

  Returns `inputs, targets, weights, segment_ids, positions`, each `[rows, row_length]`;
  `weights[r, t]` is the loss weight of predicting `targets[r, t]` from `inputs[r, :t+1]`.
  """
  lengths = [len(e.ids) - 1 for e in examples]
  if any(n > row_length for n in lengths):
    raise ValueError("pack() needs examples fitted to the row length (see fit_to_row)")
  order = sorted((i for i, n in enumerate(lengths) if n > 0), key=lambda i: -lengths[i])
  rows: list[list[int]] = []
  free: list[int] = []
  open_rows: list[int] = []  # indices of rows still accepting examples
  for i in order:
    n = lengths[i]
    for j, r in enumerate(open_rows):
      if free[r] >= n:
        rows[r].append(i)
        free[r] -= n
        if free[r] == 0:
          open_rows.pop(j)
        break
    else:
      rows.append([i])
      free.append(row_length - n)
      if free[-1] > 0:
        open_rows.append(len(rows) - 1)
        if len(open_rows) > max_open_rows:  # bound the search: retire the fullest open row
          open_rows.remove(min(open_rows, key=lambda r: free[r]))
  out = {
      "inputs": np.zeros((len(rows), row_length), np.int32),
      "targets": np.zeros((len(rows), row_length), np.int32),
      "weights": np.zeros((len(rows), row_length), np.float32),
      "segment_ids": np.zeros((len(rows), row_length), np.int32),
      "positions": np.zeros((len(rows), row_length), np.int32),
  }
  for r, members in enumerate(rows):
    t = 0
    for seg, i in enumerate(members, 1):
      ex = examples[i]
      n = lengths[i]
      out["inputs"][r, t:t + n] = ex.ids[:-1]
      out["targets"][r, t:t + n] = ex.ids[1:]
      out["weights"][r, t:t + n] = ex.weights[1:]
      out["segment_ids"][r, t:t + n] = seg
      out["positions"][r, t:t + n] = np.arange(n)
      t += n
  return out


def split_episodes(episode_ids: Sequence[str], val_fraction: float, seed: int) -> set[str]:
  """The validation episodes: a seeded, order-independent choice of whole episodes."""
  unique = sorted(set(episode_ids), key=lambda e: hashlib.sha256(f"{seed}:{e}".encode()).digest())
  if val_fraction <= 0 or len(unique) < 2:
    return set()
  n_val = min(len(unique) - 1, max(1, round(val_fraction * len(unique))))
  return set(unique[:n_val])


def _stats(examples: Sequence[Example], rows: dict[str, np.ndarray], dropped: int,
           truncated: int, untrained: int) -> dict[str, Any]:
  tokens = int((rows["segment_ids"] > 0).sum())
  trained = int((rows["weights"] > 0).sum())
  ops: collections.Counter = collections.Counter()
  for e in examples:
    ops.update(e.ops)
  n_rows, row_length = rows["inputs"].shape
  return {
      "episodes": len({e.episode_id for e in examples}),
      "examples": len(examples), "dropped": dropped, "truncated": truncated,
      "untrained": untrained,
      "rows": int(n_rows), "tokens": tokens, "trained_tokens": trained,
      "masked_fraction": trained / tokens if tokens else 0.0,
      "packing_efficiency": tokens / (n_rows * row_length) if n_rows else 0.0,
      "op_mix": dict(sorted(ops.items())),
  }


def build_dataset(turns: Sequence[TurnRecord], tok: ChatTokenizer, cfg: DatasetConfig,
                  out_dir: str | None = None) -> tuple[dict[str, dict[str, np.ndarray]],
                                                       dict[str, Any]]:
  """Tokenizes, masks, splits by episode and packs; optionally writes it to `out_dir`.

  Returns `({"train": rows, "val": rows}, stats)`; with `out_dir`, rows go to
  `<out_dir>/<split>/<field>.npy` and stats to `<out_dir>/stats.json`.
  """
  val_eps = split_episodes([t.episode_id for t in turns], cfg.val_fraction, cfg.seed)
  splits: dict[str, list[Example]] = {"train": [], "val": []}
  # dropped (too long), truncated, untrained (no trained command: only ACTION, or only failed
  # commands; such turns would be rows of zero weight)
  counts = {"train": [0, 0, 0], "val": [0, 0, 0]}
  for rec in turns:
    split = "val" if rec.episode_id in val_eps else "train"
    ex, cut = fit_to_row(tokenize_turn(rec, tok, cfg), cfg.row_length, cfg.overflow)
    if ex is None:
      counts[split][0] += 1
      continue
    if not ex.weights.any():
      counts[split][2] += 1
      continue
    counts[split][1] += int(cut)
    splits[split].append(ex)
  data, stats = {}, {"config": dataclasses.asdict(cfg)}
  for split, exs in splits.items():
    data[split] = pack(exs, cfg.row_length)
    stats[split] = _stats(exs, data[split], *counts[split])
  if out_dir is not None:
    save_dataset(out_dir, data, stats)
  return data, stats


def save_dataset(out_dir: str, data: dict[str, dict[str, np.ndarray]],
                 stats: dict[str, Any]) -> None:
  for split, rows in data.items():
    os.makedirs(os.path.join(out_dir, split), exist_ok=True)
    for name in FIELDS:
      np.save(os.path.join(out_dir, split, f"{name}.npy"), rows[name])
  with open(os.path.join(out_dir, "stats.json"), "w") as f:
    json.dump(stats, f, indent=2)


def load_split(data_dir: str, split: str, mmap: bool = True) -> dict[str, np.ndarray]:
  """Memory-maps one split, so each process reads only the rows it uses."""
  path = os.path.join(data_dir, split)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"no {split!r} split in dataset {data_dir!r}")
  rows = {n: np.load(os.path.join(path, f"{n}.npy"), mmap_mode="r" if mmap else None)
          for n in FIELDS}
  shapes = {v.shape for v in rows.values()}
  if len(shapes) != 1:
    raise ValueError(f"{path}: fields disagree in shape: {shapes}")
  return rows


class ModelChatTokenizer:
  """`ChatTokenizer` over `automem.models.Tokenizer` (end of turn: `<|im_end|>`, else EOS)."""

  def __init__(self, tokenizer: Any, end_of_turn: str = "<|im_end|>"):
    self.tokenizer = tokenizer
    eot = tokenizer.token_to_id(end_of_turn)
    if eot is None:
      eot = tokenizer.eos_token_id
    if eot is None:
      raise ValueError(f"tokenizer has neither {end_of_turn!r} nor an EOS token")
    self._eot = int(eot)

  @classmethod
  def from_pretrained(cls, path: str) -> ModelChatTokenizer:
    from automem.models.tokenizer import Tokenizer

    return cls(Tokenizer.from_pretrained(path))

  def prompt_ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
    return list(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True))

  def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    return self.tokenizer.encode_with_offsets(text)

  @property
  def end_of_turn_id(self) -> int:
    return self._eot
