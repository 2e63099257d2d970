"""A tiny client of the Chrome DevTools protocol over a pipe, to open pages in Debian's headless Chromium.

Chromium's ``--remote-debugging-pipe`` reads protocol commands from file descriptor 3 and writes replies and
events to descriptor 4, one JSON document each, ended by a NUL byte. That is all this needs: no WebSocket, no
port, no driver binary, no package beyond the standard library (selenium or a WebSocket client would be a new
dependency for the same few commands). Used by ``tests/test_report.py`` and ``benchmarks/report_render.py``.

Install the browser with ``apt-get install -y chromium`` (``/usr/bin/chromium``).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
INSTALL = "apt-get install -y chromium"


class BrowserError(RuntimeError):
    """The browser did not answer as expected (a protocol error, a timeout, an exit)."""


class Chromium:
    """One headless Chromium with one page, driven through the DevTools protocol on a pipe.

    Args:
        width, height: the page's viewport in CSS pixels.
        timeout: seconds to wait for any one reply or event.
    """

    def __init__(self, *, width: int = 1280, height: int = 900, timeout: float = 30.0,
                 binary: Path = CHROMIUM) -> None:
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []  # every event received, in order
        self._profile = tempfile.mkdtemp(prefix="mixnas-chromium-")
        to_child, self._to = os.pipe()
        self._from, from_child = os.pipe()

        def onto_3_and_4() -> None:  # in the child: the two pipe ends become fds 3 and 4, whatever they were
            read_end = fcntl.fcntl(to_child, fcntl.F_DUPFD_CLOEXEC, 10)
            write_end = fcntl.fcntl(from_child, fcntl.F_DUPFD_CLOEXEC, 10)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        args = [str(binary), "--headless", "--remote-debugging-pipe", f"--user-data-dir={self._profile}",
                "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--disable-sync", "--mute-audio",
                f"--window-size={width},{height}", "about:blank"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, preexec_fn=onto_3_and_4, close_fds=False)
        os.close(to_child)
        os.close(from_child)
        self._buffer = b""
        self._next_id = 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=False)

    # ------------------------------------------------------------------ protocol
    def _write(self, message: dict[str, Any]) -> None:
        os.write(self._to, json.dumps(message).encode() + b"\0")

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from], [], [], left)[0]:
                raise BrowserError(f"no answer from Chromium in {self.timeout:g} s")
            chunk = os.read(self._from, 1 << 20)
            if not chunk:
                raise BrowserError(f"Chromium closed the pipe (exit code {self.proc.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, *, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one command and return its result (events that arrive meanwhile are kept in ``events``)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self._write(message)
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """A command to the page."""
        return self.call(method, session=self.session, **params)

    def wait_for(self, method: str, since: int = 0) -> dict[str, Any]:
        """The first event ``method`` received at or after index ``since`` of ``events`` (waiting for it)."""
        deadline = time.monotonic() + self.timeout
        while True:
            found = next((e for e in self.events[since:] if e["method"] == method), None)
            if found is not None:
                return found
            reply = self._read(deadline)
            if "method" in reply:
                self.events.append(reply)

    # ------------------------------------------------------------------ the page
    def open(self, path: Path) -> float:
        """Load a local file and wait for its load event; returns the seconds from the command to that event."""
        since = len(self.events)
        start = time.perf_counter()
        self.send("Page.navigate", url=path.resolve().as_uri())
        self.wait_for("Page.loadEventFired", since)
        return time.perf_counter() - start

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises are awaited)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:80]!r} raised: {result['exceptionDetails'].get('text')} "
                               f"{result['exceptionDetails'].get('exception', {}).get('description', '')}")
        return result["result"].get("value")

    def center_of(self, selector: str) -> tuple[float, float]:
        """Scroll the first element matching ``selector`` into view; its centre in viewport pixels."""
        box = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null;"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return [r.left + r.width / 2, r.top + r.height / 2]; })()")
        if box is None:
            raise BrowserError(f"no element matches {selector!r}")
        return box[0], box[1]

    def hover(self, selector: str) -> None:
        x, y = self.center_of(selector)
        self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)

    def click(self, selector: str) -> None:
        x, y = self.center_of(selector)
        self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def errors(self, since: int = 0) -> list[str]:
        """Console errors, uncaught exceptions and browser log errors (a refused request, a CSP violation), from
        index ``since`` of ``events`` on."""
        out = []
        for e in self.events[since:]:
            p = e.get("params", {})
            if e["method"] == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append(f"exception: {d.get('text')} {d.get('exception', {}).get('description', '')}")
            elif e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
            elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        return out

    def screenshot(self, path: Path, *, full_page: bool = True) -> None:
        """A PNG of the page (all of it with ``full_page``)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1})
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", **params)["data"]))

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (BrowserError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to, self._from):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
