"""Headless Chromium (Debian's `chromium` package) driven over the DevTools protocol.

No browser is downloaded: the test machine's `chromium` is started with a
throwaway profile and `--remote-debugging-port=0`; the page target's
websocket is driven with aiohttp (Page.navigate, Runtime.evaluate,
Page.captureScreenshot). `.ci/run` installs the package.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from typing import Any

import aiohttp


def chromium_path() -> str | None:
  for name in ("chromium", "chromium-browser", "google-chrome"):
    path = shutil.which(name)
    if path:
      return path
  return None


class Browser:
  """One headless Chromium process with one page; use as an async context manager."""

  def __init__(self, timeout_s: float = 30.0):
    self.timeout_s = timeout_s
    self._proc: subprocess.Popen | None = None
    self._profile = ""
    self._session: aiohttp.ClientSession | None = None
    self._ws: Any = None
    self._next_id = 0

  async def __aenter__(self) -> Browser:
    exe = chromium_path()
    if exe is None:
      raise RuntimeError("chromium is not installed (apt-get install -y chromium)")
    self._profile = tempfile.mkdtemp(prefix="automem-chromium-")
    self._proc = subprocess.Popen(
        [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--no-default-browser-check", "--disable-extensions",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
         f"--user-data-dir={self._profile}", "--window-size=1280,900", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    endpoint = await asyncio.to_thread(self._endpoint)
    self._session = aiohttp.ClientSession()
    async with self._session.get(f"http://{endpoint}/json/list") as resp:
      targets = await resp.json(content_type=None)
    page = next(t for t in targets if t.get("type") == "page")
    self._ws = await self._session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
    await self.send("Page.enable")
    await self.send("Runtime.enable")
    return self

  def _endpoint(self) -> str:
    deadline = time.monotonic() + self.timeout_s
    assert self._proc is not None and self._proc.stderr is not None
    while time.monotonic() < deadline:
      line = self._proc.stderr.readline()
      if not line and self._proc.poll() is not None:
        raise RuntimeError(f"chromium exited with {self._proc.returncode}")
      m = re.search(r"DevTools listening on ws://([^/]+)/", line)
      if m:
        return m.group(1)
    raise TimeoutError("chromium did not report its DevTools endpoint")

  async def __aexit__(self, *exc: Any) -> None:
    if self._ws is not None:
      await self._ws.close()
    if self._session is not None:
      await self._session.close()
    if self._proc is not None:
      self._proc.terminate()
      try:
        self._proc.wait(10)
      except subprocess.TimeoutExpired:
        self._proc.kill()
        self._proc.wait()
    shutil.rmtree(self._profile, ignore_errors=True)

  async def send(self, method: str, **params: Any) -> dict[str, Any]:
    """One DevTools command; its result (events in between are skipped)."""
    self._next_id += 1
    my_id = self._next_id
    await self._ws.send_str(json.dumps({"id": my_id, "method": method, "params": params}))
    while True:
      msg = await asyncio.wait_for(self._ws.receive(), self.timeout_s)
      if msg.type != aiohttp.WSMsgType.TEXT:
        raise RuntimeError(f"DevTools connection closed ({msg.type})")
      data = json.loads(msg.data)
      if data.get("id") == my_id:
        if "error" in data:
          raise RuntimeError(f"{method}: {data['error']}")
        return data.get("result", {})

  async def eval(self, expression: str) -> Any:
    """The value of a JavaScript expression (promises awaited); page errors raise."""
    res = await self.send("Runtime.evaluate", expression=expression, awaitPromise=True,
                          returnByValue=True)
    if "exceptionDetails" in res:
      raise RuntimeError(f"{expression!r} raised: {res['exceptionDetails']}")
    return res["result"].get("value")

  async def goto(self, url: str) -> None:
    await self.send("Page.navigate", url=url)
    await self.wait_for("document.readyState === 'complete'")

  async def wait_for(self, expression: str, timeout_s: float | None = None) -> Any:
    """Polls until the expression is truthy; its value."""
    deadline = time.monotonic() + (timeout_s or self.timeout_s)
    while True:
      value = await self.eval(expression)
      if value:
        return value
      if time.monotonic() > deadline:
        raise TimeoutError(f"timed out waiting for {expression!r}")
      await asyncio.sleep(0.05)

  async def screenshot(self, path: str) -> str:
    res = await self.send("Page.captureScreenshot", format="png")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
      f.write(base64.b64decode(res["data"]))
    return path
