"""A real MiniHack slot env with injectable faults, for worker-pool tests.

Behaves exactly like the wrapped `MiniHackSlotEnv`, except for three action
texts that misbehave inside the worker process: "__hang__" (sleeps far past
any step timeout), "__raise__" (raises), "__exit__" (the process dies).
"""

from __future__ import annotations

import functools
import os
import time

from automem.envs.minihack import minihack_slot_factory


class FaultySlotEnv:
  def __init__(self, task: str = "Corridor-R3", **kwargs):
    self._env = minihack_slot_factory(task, **kwargs)()
    self.game, self.task = self._env.game, self._env.task

  @property
  def action_names(self):
    return self._env.action_names

  def reset(self, seed):
    return self._env.reset(seed)

  def step(self, action):
    if action == "__hang__":
      time.sleep(3600)
    if action == "__raise__":
      raise ValueError("injected fault")
    if action == "__exit__":
      os._exit(3)
    return self._env.step(action)

  def close(self):
    self._env.close()


def faulty_factory(**kwargs) -> functools.partial:
  return functools.partial(FaultySlotEnv, **kwargs)
