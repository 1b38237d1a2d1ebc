"""Loop 2: select the memory decisions to train on from one or more run directories.

  python -m experiments.select_decisions \
      --config=experiments/configs/select_decisions.py:scorers=usage;requery \
      --runs=runs/train_v0 --workdir=runs/train_v0/selection

Writes <workdir>/selected_turns.jsonl (the input of experiments/train_proficiency.py,
`selection=` variant), <workdir>/selection_stats.json and the logs of the LLM-backed
selectors. See the config file for the selectors and variants.
"""

from __future__ import annotations

import asyncio
import json

from absl import app, flags, logging
from ml_collections import config_flags

from automem.credit import aselect_decisions
from automem.credit.select import selection_config
from automem.llm import make_client
from automem.utils import parse_flags, reports_errors

_CONFIG = config_flags.DEFINE_config_file(
    "config", "experiments/configs/select_decisions.py", "Selection config file.",
    lock_config=True)
_RUNS = flags.DEFINE_list("runs", None, "Run directories (or trajectory dirs / files).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")


async def _select(config, runs: list[str], workdir: str) -> dict:
  clients = {}
  if {"requery", "counterfactual"} & set(config.scorers):
    clients["policy"] = make_client(config.policy_llm)
  if "judge" in config.scorers:
    clients["judge"] = make_client(config.judge_llm)
  try:
    for c in clients.values():
      await c.start()
    _, stats = await aselect_decisions(runs, workdir, selection_config(config.to_dict()),
                                       clients, judge_model=config.judge_llm.model)
  finally:
    for c in clients.values():
      await c.close()
  return stats


@reports_errors
def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.info("config:\n%s", _CONFIG.value)
  stats = asyncio.run(_select(_CONFIG.value, _RUNS.value, _WORKDIR.value))
  logging.info("selection stats: %s", json.dumps(stats, default=str))


if __name__ == "__main__":
  flags.mark_flags_as_required(["runs", "workdir"])
  app.run(main, flags_parser=parse_flags)
