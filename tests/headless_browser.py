"""A page of the built site in headless Chromium, driven over the DevTools protocol on a pipe (no port, no
network, no package beyond the standard library): what a reader sees when opening ``site/index.html`` from
the file system, scripts and workers included.

    with HeadlessPage(chromium) as page:
        page.open("file:///.../site/index.html?q=pseudo")
        page.wait_for("document.querySelectorAll('.md-search-result__item').length")
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The first Chromium-like browser on PATH (None: none installed)."""
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


class HeadlessPage:
    """One tab of a headless Chromium started for it; :meth:`evaluate` runs JavaScript in the page."""

    def __init__(self, executable: str, timeout: float = 60.0):
        self.executable, self.timeout = executable, timeout
        self._next_id = 0
        self._buffer = b""

    def __enter__(self) -> HeadlessPage:
        self._profile = tempfile.TemporaryDirectory(prefix="gsimclr-chromium-")
        # the browser reads commands from its fd 3 and writes answers to its fd 4
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def fds_3_and_4():  # in the child: copies above 9 first, so that neither pipe end is overwritten
            low, high = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(low, 3)
            os.dup2(high, 4)

        self._proc = subprocess.Popen(
            [self.executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--no-first-run", "--disable-extensions", f"--user-data-dir={self._profile.name}",
             "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=False, preexec_fn=fds_3_and_4)  # fds 3 and 4 stay open (Python's own are non-inheritable)
        os.close(to_browser_r)
        os.close(from_browser_w)
        target = self._call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self._call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self._call("Runtime.enable", session=True)
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._call("Browser.close")
        except Exception:  # noqa: BLE001 (the browser may be gone already)
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        self._profile.cleanup()

    def _call(self, method: str, session: bool = False, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            while b"\0" not in self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([self._from_browser], [], [], remaining)[0]:
                    raise TimeoutError(f"Chromium did not answer {method} in {self.timeout} s")
                chunk = os.read(self._from_browser, 1 << 16)
                if not chunk:
                    raise RuntimeError(f"Chromium exited before answering {method}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    def open(self, url: str) -> None:
        self._call("Page.navigate", session=True, url=url)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (JSON-serialisable values)."""
        result = self._call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0, interval: float = 0.25):
        """Poll ``expression`` until it is truthy; its last value (falsy when the time ran out)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value or time.monotonic() > deadline:
                return value
            time.sleep(interval)
