"""
``kyoukai run --reload``: a real supervisor and server processes on a free port. An edit is
served on the same port with no refused connection in between; a broken edit leaves the old
code serving and prints the error; stopping the supervisor (or killing it) leaves no server.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_cli import CLIENT_TIMEOUT, KyoukaiCommand

#: Deadline for an edit to be served (the watcher's debounce plus a new process's start).
RELOAD_DEADLINE = 30.0

MODULE = """\
from kyoukai import Kyoukai

app = Kyoukai("reloaded")


@app.route("/")
async def index(ctx):
    return "{answer}"
"""


def write_module(folder: Path, text: str) -> None:
    """Replace ``mod.py`` at once, as editors save (a half-written file would be a change too)."""
    temporary = folder / "mod.py.saving"
    temporary.write_text(text)
    os.replace(temporary, folder / "mod.py")


@pytest.fixture
def reloading(tmp_path: Path) -> Iterator[KyoukaiCommand]:
    """``kyoukai run mod:app --reload --port 0`` in a folder holding ``mod.py`` answering "one"."""
    write_module(tmp_path, MODULE.format(answer="one"))
    command = KyoukaiCommand(["run", "mod:app", "--reload", "--port", "0"], tmp_path, tmp_path / "stderr.log")
    yield command
    command.stop()


def poll_until(client: httpx.Client, url: str, answer: str) -> list[str]:
    """GET ``url`` until it answers ``answer``; every answer on the way (each request must succeed)."""
    seen: list[str] = []
    deadline = time.monotonic() + RELOAD_DEADLINE
    while not seen or seen[-1] != answer:
        assert time.monotonic() < deadline, f"still {seen[-1]!r} after {RELOAD_DEADLINE}s, not {answer!r}"
        # A refused or dropped connection raises here and fails the test.
        response = client.get(url)
        assert response.status_code == 200
        seen.append(response.text)
    return seen


def new_connection_each_time() -> httpx.Client:
    """
    A client opening a connection per request: each must be accepted and answered, whichever
    process serves it. (An idle keep-alive connection to a replaced process is closed, and a
    request sent on it at that moment is lost: clients retry those on a new connection.)
    """
    return httpx.Client(timeout=CLIENT_TIMEOUT, limits=httpx.Limits(max_keepalive_connections=0))


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT).close()
    except ConnectionRefusedError:
        return True
    return False


def test_edits_are_served_on_the_same_port_and_a_broken_edit_keeps_the_old_code(
    reloading: KyoukaiCommand, tmp_path: Path
) -> None:
    url = reloading.serving()["url"] + "/"
    reloading.wait_for_line(r"^kyoukai --reload: Reloading on changes to \*\.py under ")
    with new_connection_each_time() as client:
        assert client.get(url).text == "one"

        write_module(tmp_path, MODULE.format(answer="two"))
        assert set(poll_until(client, url, "two")) <= {"one", "two"}
        assert reloading.serving()["url"] + "/" == url

        write_module(tmp_path, MODULE.format(answer="two") + "\ndef broken(:\n")
        reloading.wait_for_line(r"did not start .*the previous version keeps serving")
        assert "SyntaxError in " in reloading.stderr() and "mod.py, line 10" in reloading.stderr()
        assert client.get(url).text == "two"

        write_module(tmp_path, MODULE.format(answer="three"))
        assert set(poll_until(client, url, "three")) <= {"two", "three"}

    port = int(url.rsplit(":", 1)[1].rstrip("/"))
    assert reloading.stop() == 0
    assert refuses_connections(port), "a server process outlived the supervisor"


def test_killing_the_supervisor_stops_the_server(reloading: KyoukaiCommand) -> None:
    url = reloading.serving()["url"]
    port = int(url.rsplit(":", 1)[1])
    assert httpx.get(url, timeout=CLIENT_TIMEOUT).text == "one"
    reloading.process.send_signal(signal.SIGKILL)
    reloading.process.wait()
    # The server process stops by itself once its link to the supervisor closes.
    deadline = time.monotonic() + RELOAD_DEADLINE
    while not refuses_connections(port):
        assert time.monotonic() < deadline, "the server process still serves without its supervisor"
        time.sleep(0.05)  # polling an external process, with a deadline


def test_a_bad_reference_exits_at_once(tmp_path: Path) -> None:
    command = KyoukaiCommand(["run", "nomodule:app", "--reload", "--port", "0"], tmp_path, tmp_path / "stderr.log")
    assert command.process.wait(timeout=RELOAD_DEADLINE) == 2
    command.stop()
    assert command.stderr() == "kyoukai: error: cannot import the app 'nomodule:app': No module named 'nomodule'\n"


def test_ctrl_c_stops_the_supervisor_and_its_server(reloading: KyoukaiCommand) -> None:
    url = reloading.serving()["url"]
    assert httpx.get(url, timeout=CLIENT_TIMEOUT).text == "one"
    assert reloading.stop(signal.SIGINT) == 0
    assert refuses_connections(int(url.rsplit(":", 1)[1]))
    assert "Traceback" not in reloading.stderr()


HOLDING = """\
import asyncio
from kyoukai import Kyoukai

app = Kyoukai("holding", shutdown_timeout=60)


@app.route("/hold")
async def hold(ctx):
    print("holding", flush=True)
    await asyncio.Event().wait()
"""


def test_a_second_ctrl_c_stops_the_server_at_once(tmp_path: Path) -> None:
    # A request that never ends holds the graceful stop up (for 60 s); a second Ctrl-C ends it.
    write_module(tmp_path, HOLDING)
    command = KyoukaiCommand(["run", "mod:app", "--reload", "--port", "0"], tmp_path, tmp_path / "stderr.log")
    url = command.serving()["url"]
    client = subprocess.Popen(["curl", "--silent", "--max-time", "120", f"{url}/hold"], stdout=subprocess.DEVNULL)
    try:
        command.wait_for_line("^holding$")
        command.process.send_signal(signal.SIGINT)
        command.wait_for_line("Stopping the server gracefully")
        assert command.stop(signal.SIGINT) == 130
        command.wait_for_line("^kyoukai --reload: Interrupted again: stopping the server at once$")
        assert refuses_connections(int(url.rsplit(":", 1)[1]))
        assert client.wait(timeout=RELOAD_DEADLINE) != 0  # its connection was cut
    finally:
        client.kill()
        client.wait()


SLOW_IMPORT = """\
import time

print("importing", flush=True)
time.sleep(120)
"""


def test_ctrl_c_during_a_slow_start_stops_at_once(tmp_path: Path) -> None:
    # The supervisor used to wait for the server to report (up to 30 s) before acting on it.
    write_module(tmp_path, SLOW_IMPORT)
    command = KyoukaiCommand(["run", "mod:app", "--reload", "--port", "0"], tmp_path, tmp_path / "stderr.log")
    command.wait_for_line("^importing$")
    assert command.stop(signal.SIGINT) == 0
    assert "Traceback" not in command.stderr()


def test_a_config_file_reloads_too(tmp_path: Path) -> None:
    write_module(tmp_path, MODULE.format(answer="one"))
    config = "component:\n  type: kyoukai\n  app: mod:app\n  ip: 127.0.0.1\n  port: 0\n"
    (tmp_path / "dev.yml").write_text(config)
    command = KyoukaiCommand(["run", "--config", "dev.yml", "--reload"], tmp_path, tmp_path / "stderr.log")
    try:
        url = command.serving()["url"] + "/"
        command.wait_for_line(r"^kyoukai --reload: Reloading on changes to \*\.py, \*\.yml, \*\.yaml under ")
        with new_connection_each_time() as client:
            assert client.get(url).text == "one"
            write_module(tmp_path, MODULE.format(answer="two"))
            poll_until(client, url, "two")
    finally:
        assert command.stop() == 0


def test_without_watchfiles_the_error_says_what_to_install(tmp_path: Path) -> None:
    write_module(tmp_path, MODULE.format(answer="one"))
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "watchfiles.py").write_text("raise ImportError('No module named watchfiles')\n")
    result = subprocess.run(
        [sys.executable, "-m", "kyoukai", "run", "mod:app", "--reload", "--port", "0"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(shadow)},
        capture_output=True,
        text=True,
        timeout=RELOAD_DEADLINE,
    )
    assert result.returncode == 2
    assert result.stderr == "kyoukai: error: --reload needs watchfiles: pip install 'kyoukai[reload]'\n"
