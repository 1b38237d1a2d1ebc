"""The local engine on the agent's real request stream: prefix reuse and continuous batching.

    python benchmarks/bench_engine.py                       # record the embedded run, replay
    python benchmarks/bench_engine.py --config_arg="games=crafter;minihack,steps=6"
    python benchmarks/bench_engine.py --stream=/tmp/stream.jsonl   # replay a saved stream
  python benchmarks/bench_engine.py --end_to_end --setups=neither,both   # whole runs

First the embedded evaluation (`experiments/configs/evaluate.py`, the tiny local model,
real envs, the real agent and runner) plays its episodes while a recording client notes
every request: episode, env step, prompt token ids, sampling settings and how many tokens
came back (saved as JSON lines with --save_stream). Then the stream is replayed through
fresh engines on the same weights, each episode sending its requests one after another
(as the agent does) and all episodes at once, in three set-ups:
  neither     no prefix reuse, whole-batch dynamic batching (the engine before issue 17)
  prefix      prefix reuse (KV slots), whole-batch batching
  both        prefix reuse and continuous batching (the default)
Replays generate exactly the recorded number of tokens per request (EOS ignored), so every
set-up does the same decoding work. Printed per set-up: prompt tokens asked for and
computed, generated tokens/s, and engine wall time per env step (best of --repeats blocks;
blocks alternate between set-ups so machine load hits all alike), with ratios against
`neither`. Env time is not in the replay; the recorded run's wall time per step, which
includes it, is printed for scale.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import os
import sys
import tempfile
import time

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script

_CONFIG_ARG = flags.DEFINE_string("config_arg", "", "evaluate.py config variant to record.")
_STREAM = flags.DEFINE_string("stream", "", "replay this saved stream instead of recording")
_SAVE = flags.DEFINE_string("save_stream", "", "write the recorded stream here (JSON lines)")
_REPEATS = flags.DEFINE_integer("repeats", 2, "timed replays per set-up; the best is kept")
_SETUPS = flags.DEFINE_list("setups", ["neither", "prefix", "both"], "set-ups to replay")
_END_TO_END = flags.DEFINE_bool(
    "end_to_end", False, "instead of replaying, play the embedded evaluation --repeats times "
    "per set-up (alternating) and print the best wall time per env step")

SETUPS = {"neither": (False, False), "prefix": (True, False), "both": (True, True)}


@dataclasses.dataclass
class Recorded:
  """One request of the stream."""

  episode: str
  step: int
  ids: list[int]
  completion_tokens: int
  temperature: float
  top_p: float
  top_k: int
  seed: int | None
  adapter: str | None


class RecordingClient:
  """Passes requests to a `LocalClient` and records each with its completion length."""

  def __init__(self, inner):
    self.inner = inner
    self.usage = inner.usage
    self.stream: list[Recorded] = []

  async def start(self):
    await self.inner.start()

  async def close(self):
    await self.inner.close()

  async def generate(self, requests):
    results = await self.inner.generate(requests)
    for req, res in zip(requests, results):
      if not res.ok:
        continue
      rid = req.request_id or "?/0/x/0"
      eid, step = rid.rsplit("/", 3)[0], int(rid.rsplit("/", 3)[1])
      self.stream.append(Recorded(eid, step, self.inner.prompt_ids(req), res.completion_tokens,
                                  req.temperature, req.top_p, req.top_k, req.seed, req.adapter))
    return results


def record(config_arg: str, setup: str = "both") -> tuple[list[Recorded], str, float, dict]:
  """Plays the embedded evaluation; returns (stream, checkpoint, wall s, llm config)."""
  from automem.llm import make_client
  from automem.llm.config import tiny_checkpoint_dir
  from automem.rollout.evaluate import evaluate
  from experiments.configs import evaluate as eval_config

  config = eval_config.get_config(config_arg or None)
  config.progress = False
  config.llm.local.prefix_cache, config.llm.local.continuous_batching = SETUPS[setup]
  client = RecordingClient(make_client(config.llm))
  t0 = time.perf_counter()
  with tempfile.TemporaryDirectory() as tmp:
    evaluate(config, os.path.join(tmp, "run"), clients={"base": client})
  wall = time.perf_counter() - t0
  checkpoint = config.llm.local.checkpoint or tiny_checkpoint_dir(config.llm)
  return client.stream, checkpoint, wall, config.llm.local.to_dict()


def replay(engine, continuous: bool, stream: list[Recorded], max_batch: int) -> float:
  """Wall seconds to serve `stream`: episodes concurrent, each one's requests in order."""
  from automem.llm import BatchingEngine
  from automem.models import SamplingParams

  by_episode: dict[str, list[Recorded]] = collections.defaultdict(list)
  for r in stream:
    by_episode[r.episode].append(r)
  batcher = BatchingEngine(engine, max_batch_size=max_batch, continuous=continuous)

  async def episode(reqs: list[Recorded]) -> None:
    for r in reqs:
      await batcher.submit(r.ids, SamplingParams(
          temperature=r.temperature, top_p=r.top_p, top_k=max(r.top_k, 0), seed=r.seed,
          max_new_tokens=max(1, r.completion_tokens), ignore_eos=True, adapter=r.adapter))

  async def main() -> None:
    await asyncio.gather(*(episode(reqs) for reqs in by_episode.values()))

  t0 = time.perf_counter()
  try:
    asyncio.run(main())
  finally:
    batcher.close()
  return time.perf_counter() - t0


def main(argv):
  del argv
  from automem.models import GenerationEngine, Tokenizer, load_hf_checkpoint

  if _END_TO_END.value:
    walls: dict[str, float] = {}
    for _ in range(_REPEATS.value):  # alternating; the first round pays the compiles
      for name in reversed(_SETUPS.value):
        stream, _, wall, _ = record(_CONFIG_ARG.value, name)
        walls[name] = min(walls.get(name, float("inf")), wall)
        steps = len({(r.episode, r.step) for r in stream})
    ref = _SETUPS.value[0]
    print(f"embedded evaluation end to end ({steps} env steps, envs included; best of "
          f"{_REPEATS.value} alternating runs, the first round paid the compiles); CPU only")
    for name in _SETUPS.value:
      print(f"| {name:<8} | {walls[name]:8.1f} s | {walls[name] / steps:7.2f} s/env step | "
            f"{walls[ref] / walls[name]:5.2f}x |")
    return
  if _STREAM.value:
    with open(_STREAM.value) as f:
      header = json.loads(f.readline())
      stream = [Recorded(**json.loads(line)) for line in f]
    checkpoint, rec_wall, local = header["checkpoint"], header["wall_s"], header["local"]
  else:
    stream, checkpoint, rec_wall, local = record(_CONFIG_ARG.value)
    if _SAVE.value:
      with open(_SAVE.value, "w") as f:
        f.write(json.dumps({"checkpoint": checkpoint, "wall_s": rec_wall, "local": local}) + "\n")
        for r in stream:
          f.write(json.dumps(dataclasses.asdict(r)) + "\n")
  steps = len({(r.episode, r.step) for r in stream})
  episodes = len({r.episode for r in stream})
  model = load_hf_checkpoint(checkpoint)
  tok = Tokenizer.from_pretrained(checkpoint)
  engines = {}
  for name in _SETUPS.value:
    prefix, continuous = SETUPS[name]
    engine = GenerationEngine(
        model, tok, max_batch_size=local["max_batch_size"],
        min_prompt_bucket=local["min_prompt_bucket"], decode_chunk=local["decode_chunk"],
        max_seq_len=local["max_seq_len"] or None, num_slots=local.get("num_slots") or None,
        prefix_cache=prefix)
    replay(engine, continuous, stream, local["max_batch_size"])  # compiles
    engines[name] = (engine, continuous)
  best: dict[str, float] = {}
  counts: dict[str, tuple[int, int, int]] = {}
  for _ in range(_REPEATS.value):
    for name, (engine, continuous) in engines.items():  # interleaved: same load for all
      engine.slots.forget(everything=True)  # no KV left over from the previous block
      p0, c0, g0 = engine.num_prompt_tokens, engine.num_prefill_tokens, engine.num_generated_tokens
      wall = replay(engine, continuous, stream, local["max_batch_size"])
      best[name] = min(best.get(name, float("inf")), wall)
      counts[name] = (engine.num_prompt_tokens - p0, engine.num_prefill_tokens - c0,
                      engine.num_generated_tokens - g0)
  print(f"stream: {len(stream)} requests, {episodes} episodes, {steps} env steps "
        f"(recorded run {rec_wall:.1f} s, {rec_wall / max(steps, 1):.2f} s per env step with "
        f"envs and compiles); engine batch {local['max_batch_size']}, best of "
        f"{_REPEATS.value}; CPU only" if "cpu" in str(model.embed_tokens.get_value().device)
        else "")
  head = (f"| {'set-up':<8} | {'prompt tok':>10} | {'computed':>9} | {'tok/s gen':>9} | "
          f"{'s/env step':>10} | {'fewer prefill':>13} | {'step speed-up':>13} |")
  print(head)
  print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
  ref = _SETUPS.value[0]
  for name in _SETUPS.value:
    prompt, computed, gen = counts[name]
    fewer = counts[ref][1] / max(computed, 1)
    print(f"| {name:<8} | {prompt:>10} | {computed:>9} | {gen / best[name]:>9.1f} | "
          f"{best[name] / steps:>10.3f} | {fewer:>12.2f}x | {best[ref] / best[name]:>12.2f}x |",
          flush=True)


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)
  app.run(main)
