"""
A real browser: headless Chromium loads the chat example (examples/chat) from a Kyoukai server
over TLS with ``http2: true``, opens ``wss://`` from the page and gets its message back. The
access log says how the WebSocket came: an extended CONNECT on the page's HTTP/2 connection
(RFC 8441), or an HTTP/1.1 ``GET`` with ``Upgrade``. Chromium (156 here) takes HTTP/2 when
the server advertises SETTINGS_ENABLE_CONNECT_PROTOCOL and a connection to the origin exists,
so the page is loaded first and the WebSocket opened from it.

Chromium is driven through the DevTools protocol (its own WebSocket, spoken with the
``websockets`` client).
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import serve
from websockets.sync.client import ClientConnection, connect

from kyoukai.asphalt import KyoukaiComponent

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium"),
]

TIMEOUT = 30.0

#: Runs in the page: join a room with the page's own join(), send, wait for the message to come
#: back, close, and return the message and the close code.
ECHO_SCRIPT = """(async () => {
  const socket = await join("lobby", "chromium");
  const echoed = new Promise((resolve) => socket.addEventListener("message", (e) => resolve(e.data), {once: true}));
  socket.send("chromium: hello over wss");
  const message = await echoed;
  const closed = new Promise((resolve) => socket.addEventListener("close", (e) => resolve(e.code), {once: true}));
  socket.close(1000);
  return [message, await closed];
})()"""


class DevTools:
    """A DevTools protocol connection to a browser: commands and the events between their answers."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        self.connection.send(json.dumps(message))
        while True:
            answer = json.loads(self.connection.recv(timeout=TIMEOUT))
            if answer.get("id") == message_id:
                assert "error" not in answer, answer
                return answer["result"]
            self.events.append(answer)

    def wait_for(self, event: str) -> dict[str, Any]:
        for seen in self.events:
            if seen.get("method") == event:
                return seen
        while True:
            answer = json.loads(self.connection.recv(timeout=TIMEOUT))
            self.events.append(answer)
            if answer.get("method") == event:
                return answer


def start_chromium(profile: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """Headless Chromium with a DevTools port of its choosing; the process and the browser's DevTools URL."""
    with log.open("wb") as output:  # (the child keeps its own copy of the descriptor)
        process = subprocess.Popen(
            [
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--ignore-certificate-errors",
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=output,
        )
    # Chromium writes its port and path there once it listens (an external process: poll).
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + TIMEOUT
    while True:
        lines = port_file.read_text().split() if port_file.exists() else []
        if len(lines) >= 2:
            return process, f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"chromium did not start: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)


def test_chromium_echoes_over_wss_with_http2_on(tls_files, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from examples.chat.app import app

    caplog.set_level(logging.INFO, logger="kyoukai.access")
    ssl_config = {"enabled": True, "ssl_certfile": tls_files["cert"], "ssl_keyfile": tls_files["key"]}
    with serve(app, KyoukaiComponent, ssl=ssl_config, http2=True) as server:
        process, url = start_chromium(tmp_path / "profile", tmp_path / "chromium.log")
        try:
            with connect(url, max_size=None, open_timeout=TIMEOUT) as connection:
                devtools = DevTools(connection)
                target = devtools.call("Target.createTarget", url="about:blank")["targetId"]
                session = devtools.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
                devtools.call("Page.enable", session)
                devtools.call("Page.navigate", session, url=f"https://localhost:{server.port}/")
                devtools.wait_for("Page.loadEventFired")
                result = devtools.call(
                    "Runtime.evaluate", session, expression=ECHO_SCRIPT, awaitPromise=True, returnByValue=True
                )
                assert "exceptionDetails" not in result, result
                assert result["result"]["value"] == ["chromium: hello over wss", 1000]
                devtools.call("Browser.close")
            process.wait(TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(TIMEOUT)
    # The server has stopped: every access line is written.
    lines = [record.getMessage() for record in caplog.records if record.name == "kyoukai.access"]
    assert any('"GET / HTTP/2" 200' in line for line in lines), lines
    websocket_lines = [line for line in lines if "/ws/lobby" in line]
    assert len(websocket_lines) == 1, lines
    # Chromium carried the WebSocket on the page's HTTP/2 connection (RFC 8441), not HTTP/1.1.
    assert '"CONNECT /ws/lobby HTTP/2" 200' in websocket_lines[0], websocket_lines
