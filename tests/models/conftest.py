"""Makes the shared model fixtures available here even before the root conftest lists
`tests.support.models` in `pytest_plugins`."""

from tests.support.models import (  # noqa: F401
    hf_qwen2_dir,
    hf_qwen3_dir,
    tiny_checkpoint_dir,
    tiny_engine,
    tiny_model,
    tiny_tokenizer,
)
