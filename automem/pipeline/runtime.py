"""Process set-up shared by the pipeline's entry points."""

from __future__ import annotations

import os


def local_compile_cache() -> None:
  """Persists the local engine's XLA compilations across runs (unless a cache is already set)."""
  import jax

  from automem.models.tiny import default_cache_dir

  if not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", os.path.join(default_cache_dir(), "jax_cache"))
