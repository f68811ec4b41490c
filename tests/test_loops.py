"""
The event loop of Kyoukai's own entry points: uvloop when it is installed, unless
``--loop asyncio`` / ``KYOUKAI_LOOP=asyncio`` / ``app.run(loop="asyncio")`` says otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from test_cli import kyoukai, run_to_exit  # noqa: F401 (kyoukai is a fixture)
from test_examples import free_port
from test_http11_run import wait_until_listening

from kyoukai import loops

pytest.importorskip("uvloop")

LOOP_APP = """\
import asyncio

from kyoukai import Kyoukai

app = Kyoukai("loops")


@app.route("/")
async def index(ctx):
    return type(asyncio.get_running_loop()).__module__.split(".")[0]
"""


@pytest.fixture
def loop_app(tmp_path: Path) -> Path:
    (tmp_path / "loopapp.py").write_text(LOOP_APP)
    return tmp_path


def served_loop(command) -> str:
    response = httpx.get(command.serving()["url"] + "/", timeout=10)
    assert response.status_code == 200
    return response.text


class TestResolve:
    def test_auto_is_uvloop_when_installed(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv(loops.ENV_VAR, raising=False)
        assert loops.resolve() == "uvloop"
        assert loops.event_loop_policy() == "uvloop"

    def test_the_environment_variable_turns_it_off(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(loops.ENV_VAR, "asyncio")
        assert loops.resolve() == "asyncio"
        assert loops.event_loop_policy() is None
        # An explicit choice wins over the variable.
        assert loops.resolve("uvloop") == "uvloop"

    def test_a_bad_value_is_named(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(loops.ENV_VAR, "tokyo")
        with pytest.raises(ValueError, match=r"\$KYOUKAI_LOOP: 'tokyo' is not one of auto, asyncio, uvloop"):
            loops.resolve()

    def test_uvloop_asked_for_but_missing(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(loops, "uvloop_installed", lambda: False)
        assert loops.resolve("auto") == "asyncio"
        with pytest.raises(ValueError, match=r"pip install 'Kyoukai\[uvloop\]'"):
            loops.resolve("uvloop")


class TestKyoukaiRun:
    def test_uvloop_by_default(self, kyoukai, loop_app: Path) -> None:  # noqa: F811
        command = kyoukai(["run", "loopapp:app", "--port", "0"], cwd=loop_app, env={loops.ENV_VAR: ""})
        assert served_loop(command) == "uvloop"

    def test_loop_asyncio(self, kyoukai, loop_app: Path) -> None:  # noqa: F811
        command = kyoukai(["run", "loopapp:app", "--port", "0", "--loop", "asyncio"], cwd=loop_app)
        assert served_loop(command) == "asyncio"

    def test_the_environment_variable(self, kyoukai, loop_app: Path) -> None:  # noqa: F811
        command = kyoukai(["run", "loopapp:app", "--port", "0"], cwd=loop_app, env={loops.ENV_VAR: "asyncio"})
        assert served_loop(command) == "asyncio"

    def test_a_bad_environment_variable_is_one_line(self, loop_app: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(loops.ENV_VAR, "fast")
        result = run_to_exit(["run", "loopapp:app", "--port", "0"], loop_app)
        assert result.returncode == 2
        assert "$KYOUKAI_LOOP: 'fast' is not one of auto, asyncio, uvloop" in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("argument", "expected"), [("", "uvloop"), (", loop='asyncio'", "asyncio")])
def test_app_run(loop_app: Path, argument: str, expected: str) -> None:
    port = free_port()
    code = f"from loopapp import app; app.run('127.0.0.1', {port}{argument})"
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=loop_app,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        bufsize=0,
        env={**os.environ, loops.ENV_VAR: "", "PYTHONUNBUFFERED": "1"},
    )
    try:
        wait_until_listening(process, port)
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=10).text == expected
    finally:
        process.terminate()
        status = process.wait(10)
        assert process.stdout is not None
        process.stdout.close()
    assert status == 0


class TestHint:
    """A server started on asyncio's loop while uvloop is installed says how to use uvloop, once."""

    def test_once_on_asyncio(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import asyncio

        monkeypatch.setattr(loops, "_hinted", False)
        monkeypatch.delenv(loops.ENV_VAR, raising=False)
        loop = asyncio.new_event_loop()
        try:
            assert loops.hint_uvloop(loop) is True
            assert loops.hint_uvloop(loop) is False
        finally:
            loop.close()

    def test_not_on_uvloop_nor_when_asyncio_is_asked_for(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import asyncio

        import uvloop

        monkeypatch.setattr(loops, "_hinted", False)
        fast = uvloop.new_event_loop()
        try:
            assert loops.hint_uvloop(fast) is False
        finally:
            fast.close()
        monkeypatch.setenv(loops.ENV_VAR, "asyncio")
        loop = asyncio.new_event_loop()
        try:
            assert loops.hint_uvloop(loop) is False
        finally:
            loop.close()

    def test_asphalt_run_logs_it(self, tmp_path: Path) -> None:
        (tmp_path / "loopapp.py").write_text(LOOP_APP)
        port = free_port()
        (tmp_path / "config.yml").write_text(
            f"component:\n  type: kyoukai\n  app: loopapp:app\n  ip: 127.0.0.1\n  port: {port}\n"
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "asphalt", "run", "config.yml"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            bufsize=0,
            env={**os.environ, loops.ENV_VAR: "", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(tmp_path)},
        )
        assert process.stdout is not None
        try:
            wait_until_listening(process, port)
            assert httpx.get(f"http://127.0.0.1:{port}/", timeout=10).text == "asyncio"
        finally:
            process.terminate()
            process.wait(10)
            output = process.stdout.read().decode()
            process.stdout.close()
        assert "uvloop is installed but this event loop is asyncio's" in output, output
