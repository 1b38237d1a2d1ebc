"""The viewer's data: a run directory turned into small script files the page loads on demand.

Every file is JavaScript of the form `automemData("<key>", {...});`, so the
page can load it with a `<script>` tag both from a server and from disk
(`file://` pages may not fetch JSON). Layout under `data/`:

  index.js                        the episodes with their outcomes (and summary.json)
  ep/<episode>/meta.js            header, system prompt, step count, chunk size, and the
                                  step numbers of every filterable event (ops, errors,
                                  fallbacks, rewards, achievements)
  ep/<episode>/chunk-<k>.js       steps [k*C, (k+1)*C): turns (prompts without the system
                                  message, completions, commands with results, memory
                                  diffs), the step line, and the memory files as they
                                  were when the chunk starts

A trajectory is read once, record by record, holding one chunk at a time, so a
100k-step NetHack episode costs one chunk of memory here and in the page.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any

from automem.memory import OPS, apply_diff
from automem.report import traces

DEFAULT_CHUNK = 50


def _script(key: str, data: Any) -> str:
  body = json.dumps(data, ensure_ascii=False).replace("</", "<\\/")
  return f"automemData({json.dumps(key)}, {body});\n"


def _write(path: str, key: str, data: Any) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(_script(key, data))
  os.replace(tmp, path)


def chunk_key(episode: str, k: int) -> str:
  return f"chunk:{episode}:{k}"


def _steps(path: str) -> Iterator[tuple[str, Any]]:
  """("header", rec), then ("step", (number, turns, step line or None)) in order, ("end", rec)."""
  current, turns, line = None, [], None
  for rec in traces.iter_episode_records(path):
    kind = rec.get("type")
    if kind in ("turn", "step"):
      n = int(rec.get("step", 0))
      if current is not None and n != current:
        yield "step", (current, turns, line)
        turns, line = [], None
      current = n
      if kind == "turn":
        turns.append(rec)
      else:
        line = rec
    elif kind in ("header", "end"):
      if kind == "end" and current is not None:
        yield "step", (current, turns, line)
        current = None
      yield kind, rec
  if current is not None:
    yield "step", (current, turns, line)


def _turn_view(turn: dict[str, Any]) -> dict[str, Any]:
  msgs = [m for m in turn.get("messages") or [] if m.get("role") != "system"]
  keep = ("phase", "subphase", "turn", "role", "adapter", "completion", "commands", "memory_diff",
          "prompt_tokens", "completion_tokens", "finish_reason", "error", "action")
  return {**{k: turn.get(k) for k in keep}, "messages": msgs}


def export_episode(path: str, data_dir: str, chunk: int = DEFAULT_CHUNK) -> dict[str, Any]:
  """Writes one episode's meta and chunk files; returns the meta."""
  episode = os.path.basename(path)[: -len(".jsonl")]
  out = os.path.join(data_dir, "ep", episode)
  header: dict[str, Any] = {}
  end: dict[str, Any] | None = None
  system = ""
  memory: dict[str, str] = {}
  events: dict[str, Any] = {"fallback": [], "error": [], "reward": [], "achievements": [],
                            "ops": collections.defaultdict(list)}
  seen_ach: set[str] = set()
  buf: list[dict[str, Any]] = []
  k, start, count = 0, 0, 0

  def flush() -> None:
    nonlocal k, buf, start
    _write(os.path.join(out, f"chunk-{k:05d}.js"), chunk_key(episode, k),
           {"index": k, "start": start, "memory_start": chunk_memory, "steps": buf})
    k, buf = k + 1, []

  chunk_memory: dict[str, str] = {}
  for kind, rec in _steps(path):
    if kind == "header":
      header = rec
      memory = dict(rec.get("initial_memory") or {})
    elif kind == "end":
      end = rec
    else:
      n, turns, line = rec
      if not buf:
        start, chunk_memory = n, dict(memory)
      if not system:
        system = next((m["content"] for t in turns for m in t.get("messages") or []
                       if m.get("role") == "system"), "")
      error = False
      for t in turns:
        error |= bool(t.get("error"))
        for c in t.get("commands") or ():
          error |= not c.get("ok")
          if c.get("op") in OPS:
            ops = events["ops"][c["op"]]
            if not ops or ops[-1] != n:
              ops.append(n)
        with contextlib.suppress(ValueError):  # a diff that does not fit: keep the tracked state
          memory = apply_diff(memory, t.get("memory_diff") or {})
      if line:
        if line.get("fallback"):
          events["fallback"].append(n)
        if line.get("reward"):
          events["reward"].append(n)
        error |= not line.get("valid_action", True)
        for a in line.get("achievements") or ():
          if a not in seen_ach:
            seen_ach.add(a)
            events["achievements"].append({"name": a, "step": n})
      if error:
        events["error"].append(n)
      buf.append({"step": n, "line": line, "turns": [_turn_view(t) for t in turns]})
      count += 1
      if len(buf) >= chunk:
        flush()
  if buf:
    flush()
  meta = {"episode": episode, "header": header, "system": system, "chunk_size": chunk,
          "num_steps": count, "num_chunks": k, "first_step": 0,
          "events": {**events, "ops": dict(sorted(events["ops"].items()))},
          "end": {key: (end or {}).get(key) for key in ("stats", "metrics", "error")} if end
          else None}
  _write(os.path.join(out, "meta.js"), f"meta:{episode}", meta)
  return meta


def episode_rows(run_dir: str) -> list[dict[str, Any]]:
  """The episodes list: id and outcome of each (read from headers and end lines)."""
  rows = []
  for info in traces.episodes(run_dir):
    rows.append({"id": os.path.basename(info.path)[: -len(".jsonl")], "game": info.game,
                 "task": info.task, "seed": info.seed, "seed_set": info.seed_set,
                 "structure": info.structure, "finished": info.finished,
                 "errored": info.errored, "progression": info.progression,
                 "achievements": list(info.achievements), "steps": info.steps,
                 "fallback": info.fallback, "end_reason": info.end_reason})
  return rows


def export_index(run_dir: str, data_dir: str) -> dict[str, Any]:
  index = {"run_dir": os.path.abspath(run_dir), "episodes": episode_rows(run_dir),
           "summary": traces.read_json(os.path.join(run_dir, "summary.json"))}
  _write(os.path.join(data_dir, "index.js"), "index", index)
  return index


def export_run(run_dir: str, out_dir: str, chunk: int = DEFAULT_CHUNK) -> str:
  """The static viewer of a whole run in `out_dir` (open `out_dir/index.html` from disk)."""
  from automem.viewer.page import write_page

  data_dir = os.path.join(out_dir, "data")
  export_index(run_dir, data_dir)
  for path in traces.trajectory_paths(run_dir):
    export_episode(path, data_dir, chunk)
  write_page(out_dir)
  return os.path.join(out_dir, "index.html")
