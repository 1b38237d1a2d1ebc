"""Small shared helpers (config parsing, entry-point errors, temp files of killed runs)."""

from automem.utils.config import parse_arg
from automem.utils.errors import InputError, RunStopped, parse_flags, reports_errors
from automem.utils.files import sweep_stale_tmp, tmp_path

__all__ = ["InputError", "RunStopped", "parse_arg", "parse_flags", "reports_errors", "sweep_stale_tmp",
           "tmp_path"]
