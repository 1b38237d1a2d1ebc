"""A child process that drives one MemoryStore for tests/memory/test_store_durability.py.

Modes (argv[1]):
  serve ROOT     reads JSON cases from stdin, one per line: `{"fsize": bytes or null,
                 "name", "content"}`; sets the soft RLIMIT_FSIZE (a full disk), writes,
                 lifts the limit and answers `{"ok", "error", "mirror"}`.
  churn ROOT     rewrites a kept file with ever longer self-checking versions, printing
                 each acknowledged version number, until killed.
  hold ROOT      opens a store, prints "ready" and waits for stdin to close.
"""

from __future__ import annotations

import json
import resource
import sys

from automem.memory import MemoryStore, StoreError, StoreLimits


def version_text(i: int) -> str:
  """Version `i` of the churned file: its own length and number on every line."""
  body = "".join(f"v{i} line {k}\n" for k in range(1 + i % 50))
  return f"len={len(body)}\n{body}"


def main() -> None:
  mode, root = sys.argv[1], sys.argv[2]
  limits = StoreLimits(max_file_bytes=1 << 16, max_total_bytes=1 << 20)
  if mode == "serve":
    store = MemoryStore(root, limits=limits, initial_files={"a.txt": "old\n"})
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    for line in sys.stdin:
      case = json.loads(line)
      ok, error = True, ""
      if case["fsize"] is not None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (case["fsize"], hard))
      try:
        store.write(case["name"], case["content"])
      except StoreError as e:
        ok, error = False, str(e)
      finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
      print(json.dumps({"ok": ok, "error": error, "mirror": store.snapshot()}), flush=True)
  elif mode == "churn":
    store = MemoryStore(root, limits=limits, initial_files={"log.txt": ""}, keep=["log.txt"])
    i = 0
    while True:
      i += 1
      store.write("log.txt", version_text(i))
      store.write(f"scratch{i % 3}.txt", version_text(i))
      print(i, flush=True)
  elif mode == "hold":
    store = MemoryStore(root, limits=limits)
    print("ready", flush=True)
    sys.stdin.read()
    store.close()


if __name__ == "__main__":
  main()
