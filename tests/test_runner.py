"""
The runner behind ``kyoukai run`` and ``app.run()``: signals are handled from before the start,
so a stop asked for at any moment is carried out, gracefully, on asyncio and on uvloop.

Each test runs a small script in a subprocess whose root component tells the test where it is
(lines on stdout) and waits for the test's go (a line on stdin), so every signal lands at a known
point without sleeping.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

DEADLINE = 20.0

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from asphalt.core import Component, Context
    from kyoukai.runner import Runner

    def say(line):
        print(line, flush=True)

    async def go():
        # The test's go: a line on stdin.
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    class Root(Component):
        async def start(self, ctx: Context) -> None:
            async def teardown(exception):
                say(f"teardown {type(exception).__name__ if exception else None}")
                if "--slow-teardown" in sys.argv:
                    say("tearing down")
                    await go()
                if "--stuck-teardown" in sys.argv:
                    # Holds the loop: only a signal handler that raises gets it out.
                    say("stuck")
                    while runner._interrupts < 2:
                        pass
                    say("second seen")
                    while True:
                        pass
            ctx.add_teardown_callback(teardown, pass_exception=True)
            if "--fail" in sys.argv:
                raise RuntimeError("no database")
            say("starting")
            await go()
            for flag in sys.argv:
                if flag.startswith("--exit-while-serving="):
                    asyncio.get_running_loop().call_soon(sys.exit, eval(flag.partition("=")[2]))
            say("started")

    runner = Runner(event_loop_policy=sys.argv[1] or None, logging=20)
    runner.run(Root())
    """
)


class Script:
    def __init__(self, folder: Path, loop: str, *flags: str) -> None:
        path = folder / "runner_script.py"
        path.write_text(SCRIPT)
        self.process = subprocess.Popen(
            [sys.executable, str(path), loop, *flags],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []

    def wait_for(self, line: str) -> None:
        assert self.process.stdout is not None
        while True:
            got = self.process.stdout.readline()
            if not got:
                pytest.fail(f"exited before {line!r}: {self.finish()}")
            self.lines.append(got.strip())
            if got.strip() == line:
                return

    def started(self) -> None:
        """Let the component start; return once it has."""
        self.wait_for("starting")
        self.go()
        self.wait_for("started")

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def finish(self) -> tuple[int, list[str], str]:
        """The exit status, every stdout line, and stderr."""
        try:
            stdout, stderr = self.process.communicate(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            stdout, stderr = self.process.communicate()
            pytest.fail(f"did not stop within {DEADLINE}s; stdout {self.lines + stdout.split()}; stderr:\n{stderr}")
        return self.process.returncode, self.lines + stdout.splitlines(), stderr


@pytest.fixture(params=["asyncio", "uvloop"])
def loop(request: pytest.FixtureRequest) -> str:
    return "" if request.param == "asyncio" else "uvloop"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_the_start_stops_once_started(tmp_path: Path, loop: str, sig: signal.Signals) -> None:
    script = Script(tmp_path, loop)
    script.wait_for("starting")
    script.process.send_signal(sig)
    script.go()
    status, lines, stderr = script.finish()
    assert status == 0, stderr
    assert lines[-2:] == ["started", "teardown None"]
    assert f"Received {sig.name}; stopping gracefully" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_right_after_the_start_is_not_lost(tmp_path: Path, loop: str, sig: signal.Signals) -> None:
    # The moment asphalt's run_application left unguarded: the start is over, serving not begun.
    script = Script(tmp_path, loop)
    script.started()
    script.process.send_signal(sig)
    status, lines, stderr = script.finish()
    assert status == 0, stderr
    assert lines[-1] == "teardown None"
    assert "Stopping application" in stderr


@pytest.mark.parametrize("first", [signal.SIGINT, signal.SIGTERM])
def test_a_second_ctrl_c_stops_at_once(tmp_path: Path, loop: str, first: signal.Signals) -> None:
    # The second Ctrl-C is handled by the runner, not raised as a KeyboardInterrupt wherever the
    # main thread is: that could leave a lock half taken (once in ~200 runs, the thread pool's,
    # and the exit then waited on it for ever).
    script = Script(tmp_path, loop, "--slow-teardown")
    script.started()
    script.process.send_signal(first)
    script.wait_for("tearing down")
    script.process.send_signal(signal.SIGINT)
    status, _, stderr = script.finish()
    assert status == 130
    assert "Interrupted again: stopping at once" in stderr
    assert "Traceback" not in stderr
    # The abandoned teardown is not reported as a task destroyed while pending.
    assert "destroyed" not in stderr


def test_a_third_ctrl_c_gets_a_held_up_loop_out(tmp_path: Path, loop: str) -> None:
    # A teardown that never gives the loop back: the second Ctrl-C cannot be carried out by the
    # loop; the third raises KeyboardInterrupt where the code is stuck.
    script = Script(tmp_path, loop, "--stuck-teardown")
    script.started()
    script.process.send_signal(signal.SIGINT)
    script.wait_for("stuck")
    script.process.send_signal(signal.SIGINT)
    script.wait_for("second seen")
    script.process.send_signal(signal.SIGINT)
    status, _, stderr = script.finish()
    assert status == 130, stderr
    assert "Interrupted again: stopping at once" in stderr
    assert "Traceback" not in stderr


def test_a_second_sigterm_changes_nothing(tmp_path: Path, loop: str) -> None:
    script = Script(tmp_path, loop, "--slow-teardown")
    script.started()
    script.process.send_signal(signal.SIGTERM)
    script.wait_for("tearing down")
    script.process.send_signal(signal.SIGTERM)
    script.go()  # the teardown ends as asked: the graceful stop was not cut short
    status, lines, stderr = script.finish()
    assert status == 0, stderr
    assert lines[-1] == "tearing down"
    assert stderr.count("Received SIGTERM") == 1


def test_a_failed_start_exits_1_after_closing_the_context(tmp_path: Path, loop: str) -> None:
    script = Script(tmp_path, loop, "--fail")
    status, lines, stderr = script.finish()
    assert status == 1
    assert lines == ["teardown RuntimeError"]
    assert "Error during application startup" in stderr
    assert "RuntimeError: no database" in stderr


@pytest.mark.parametrize(("code", "expected"), [("3", 3), ("None", 0), ("'bye'", 1)])
def test_sys_exit_while_serving_stops_gracefully_with_its_status(
    tmp_path: Path, loop: str, code: str, expected: int
) -> None:
    script = Script(tmp_path, loop, f"--exit-while-serving={code}")
    script.wait_for("starting")
    script.go()
    status, lines, stderr = script.finish()
    assert status == expected, stderr
    assert ("Exiting: bye" in stderr) == (code == "'bye'")
    assert lines[-2:] == ["started", "teardown None"]


APP = textwrap.dedent(
    """
    from kyoukai import Kyoukai

    app = Kyoukai("leaving", shutdown_timeout=60)

    @app.route("/leave")
    async def leave(ctx):
        raise {exception}
    """
)


@pytest.mark.parametrize("exception", ["KeyboardInterrupt", "SystemExit(0)"])
@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "h2c"])
def test_an_interrupt_inside_a_handler_does_not_hold_up_the_stop(tmp_path: Path, exception: str, http2: bool) -> None:
    """
    A Ctrl-C that lands while a handler runs ends that handler's task with KeyboardInterrupt:
    its connection is closed (HTTP/1.1) or its stream reset (HTTP/2) at once, so the graceful
    stop does not wait shutdown_timeout (60 s here) for an answer that will never come.
    """
    (tmp_path / "leaving.py").write_text(APP.format(exception=exception))
    command = [sys.executable, "-m", "kyoukai", "run", "leaving:app", "--port", "0", "--no-access-log"]
    server = subprocess.Popen(
        command + (["--http2"] if http2 else []),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    url = server.stdout.readline().split()[1]
    # The client waits longer than the test: only the server's closing can end its wait in time.
    client = ["curl", "--silent", "--max-time", str(3 * DEADLINE), *(["--http2-prior-knowledge"] if http2 else [])]
    with subprocess.Popen([*client, f"{url}/leave"], stdout=subprocess.PIPE, text=True) as answer:
        try:
            status = server.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            server.kill()
            answer.kill()
            pytest.fail(f"the server did not stop within {DEADLINE}s:\n{server.communicate()[1]}")
        # No response: the handler never finished.
        assert answer.wait(DEADLINE) != 0 and answer.stdout is not None and answer.stdout.read() == ""
    stderr = server.communicate()[1]
    assert status == 0, stderr
    assert "Application stopped" in stderr
