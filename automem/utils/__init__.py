"""Small shared helpers (config parsing, run directories, logging)."""

from automem.utils.config import parse_arg

__all__ = ["parse_arg"]
