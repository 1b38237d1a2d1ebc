"""Test-wide settings: 8 simulated CPU devices and a persistent JAX cache.

Shared fixtures live in `tests/support/` modules, loaded as plugins below,
so tiny models, tokenizers and envs are built once per session.
"""

import os

# Must be set before JAX initialises its backends.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import jax

_CACHE = os.environ.get(
    "AUTOMEM_TEST_JAX_CACHE", os.path.join(os.path.dirname(os.path.dirname(__file__)), ".jax_cache")
)
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

pytest_plugins = ["tests.support.models"]

# MiniHack's Boxoban levels come from ../shared/data on machines without internet.
_SHARED_BOXOBAN = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "shared", "data", "boxoban-levels",
)
if "AUTOMEM_BOXOBAN_DIR" not in os.environ and os.path.isdir(_SHARED_BOXOBAN):
  os.environ["AUTOMEM_BOXOBAN_DIR"] = _SHARED_BOXOBAN
