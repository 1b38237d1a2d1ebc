"""The memory package stays light: no JAX, envs, models or LLM code behind it."""

from __future__ import annotations

import subprocess
import sys


def test_memory_imports_nothing_heavy():
  code = ("import sys, automem.memory\n"
          "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
          "('jax', 'flax', 'torch', 'transformers', 'craftax', 'nle', 'minihack') or "
          "m.startswith(('automem.envs', 'automem.models', 'automem.llm', 'automem.agent')))\n"
          "print(','.join(bad))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == ""
