"""
The ``kyoukai`` command, run as a user runs it (``python -m kyoukai run ...`` in a subprocess)
and talked to with httpx: the printed URL, HTTP/2, TLS, ``--config``, ``--debug``, the access
log switch, and one-line errors for bad references and options.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
START_DEADLINE = 30.0
STOP_DEADLINE = 20.0
CLIENT_TIMEOUT = 10.0
SERVING = re.compile(r"^Serving (?P<url>https?://\S+) \((?P<protocols>[^)]+)\)$")

APP_MODULE = """\
from kyoukai import Kyoukai

app = Kyoukai("cli")


@app.route("/")
async def index(ctx):
    return "served by kyoukai run"


@app.route("/fail")
async def a_failing_handler(ctx):
    raise LookupError("no such widget")
"""


class KyoukaiCommand:
    """``python -m kyoukai ARGS`` in a subprocess: stdout read line by line as it comes, stderr in a file."""

    def __init__(self, args: list[str], cwd: Path, stderr_path: Path, env: dict[str, str] | None = None) -> None:
        self.stderr_path = stderr_path
        self._stderr_file = stderr_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kyoukai", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=self._stderr_file,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.stdout: list[str] = []
        #: Set by a test whose app logs a traceback on purpose.
        self.tracebacks_expected = False
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def output(self) -> str:
        return "stdout:\n" + "\n".join(self.stdout) + "\nstderr:\n" + self.stderr()

    def wait_for_line(self, pattern: str | re.Pattern[str], timeout: float = START_DEADLINE) -> re.Match[str]:
        """The next stdout line matching ``pattern``; fails if the process ends or the deadline passes."""
        try:
            while True:
                line = self._lines.get(timeout=timeout)
                if line is None:
                    self._lines.put(None)
                    pytest.fail(
                        f"the command exited ({self.process.wait()}) before printing {pattern!r}:\n{self.output()}"
                    )
                self.stdout.append(line)
                match = re.search(pattern, line)
                if match:
                    return match
        except queue.Empty:
            pytest.fail(f"no line matching {pattern!r} within {timeout}s:\n{self.output()}")

    def serving(self) -> re.Match[str]:
        """The next ``Serving URL (protocols)`` line."""
        return self.wait_for_line(SERVING)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send ``sig`` (a graceful stop) and wait; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"the command did not stop within {STOP_DEADLINE}s:\n{self.output()}")
        finally:
            self._stderr_file.close()
            self._reader.join(STOP_DEADLINE)
            assert self.process.stdout is not None
            self.process.stdout.close()


@pytest.fixture
def kyoukai(tmp_path: Path) -> Iterator:
    """Start ``python -m kyoukai ARGS`` in a folder: ``kyoukai(args, cwd=tmp_path)``; stopped after the test."""
    started: list[KyoukaiCommand] = []

    def start(args: list[str], cwd: Path = tmp_path, env: dict[str, str] | None = None) -> KyoukaiCommand:
        command = KyoukaiCommand(args, cwd, tmp_path / f"stderr-{len(started)}.log", env)
        started.append(command)
        return command

    yield start
    for command in started:
        status = command.stop()
        assert status == 0, command.output()
        if not command.tracebacks_expected:
            assert "Traceback" not in command.stderr(), command.output()


def run_to_exit(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m kyoukai ARGS`` that is expected to exit by itself."""
    return subprocess.run(
        [sys.executable, "-m", "kyoukai", *args], cwd=cwd, capture_output=True, text=True, timeout=START_DEADLINE
    )


@pytest.fixture
def app_folder(tmp_path: Path) -> Path:
    """A folder holding ``cliapp.py`` (``cliapp:app``)."""
    (tmp_path / "cliapp.py").write_text(APP_MODULE)
    return tmp_path


def get(url: str, *, http2: bool = False, prior_knowledge: bool = False, verify: ssl.SSLContext | bool = True):
    with httpx.Client(http2=http2, http1=not prior_knowledge, verify=verify, timeout=CLIENT_TIMEOUT) as client:
        return client.get(url)


class TestServing:
    def test_the_hello_example_on_a_free_port(self, kyoukai) -> None:
        command = kyoukai(["run", "examples.hello.app:app", "--port", "0"], cwd=ROOT)
        serving = command.serving()
        assert serving["protocols"] == "HTTP/1.1"
        url = serving["url"]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url) and not url.endswith(":0")
        response = get(url + "/hello/cli")
        assert (response.status_code, response.text) == (200, "Hello, cli!\n")
        assert response.http_version == "HTTP/1.1"
        # Logging on the console at INFO, the access log included by default.
        command.stop()
        assert '"GET /hello/cli HTTP/1.1" 200' in command.stderr()
        assert "INFO" in command.stderr()

    def test_http2_with_prior_knowledge(self, kyoukai, app_folder: Path) -> None:
        serving = kyoukai(["run", "cliapp:app", "--port", "0", "--http2"], cwd=app_folder).serving()
        assert serving["protocols"] == "HTTP/1.1, h2c"
        response = get(serving["url"], http2=True, prior_knowledge=True)
        assert (response.http_version, response.text) == ("HTTP/2", "served by kyoukai run")

    def test_tls_with_certfile_and_keyfile_negotiates_h2(
        self, kyoukai, app_folder: Path, tls_files: dict[str, str]
    ) -> None:
        args = ["run", "cliapp:app", "--port", "0", "--http2", "--certfile", tls_files["cert"]]
        serving = kyoukai([*args, "--keyfile", tls_files["key"]], cwd=app_folder).serving()
        assert serving["protocols"] == "HTTP/1.1, h2"
        assert serving["url"].startswith("https://127.0.0.1:")
        verify = ssl.create_default_context(cafile=tls_files["ca"])
        response = get(serving["url"], http2=True, verify=verify)
        assert (response.http_version, response.text) == ("HTTP/2", "served by kyoukai run")

    def test_dev_cert(self, kyoukai, app_folder: Path) -> None:
        serving = kyoukai(["run", "cliapp:app", "--port", "0", "--http2", "--dev-cert"], cwd=app_folder).serving()
        certificate = app_folder / ".kyoukai-devcert" / "cert.pem"
        assert certificate.is_file()
        response = get(serving["url"], http2=True, verify=ssl.create_default_context(cafile=str(certificate)))
        assert (response.http_version, response.text) == ("HTTP/2", "served by kyoukai run")

    def test_access_log_off(self, kyoukai, app_folder: Path) -> None:
        command = kyoukai(["run", "cliapp:app", "--port", "0", "--no-access-log"], cwd=app_folder)
        assert get(command.serving()["url"]).status_code == 200
        command.stop()
        assert "Kyoukai serving" in command.stderr()
        assert "GET / HTTP/1.1" not in command.stderr()

    def test_sigint_stops_gracefully(self, kyoukai, app_folder: Path) -> None:
        command = kyoukai(["run", "cliapp:app", "--port", "0"], cwd=app_folder)
        command.serving()
        assert command.stop(signal.SIGINT) == 0
        assert "Application stopped" in command.stderr()


class TestConfig:
    CONFIG = """\
component:
  type: kyoukai
  app: cliapp:app
  ip: 127.0.0.1
  port: 0
  http2: true
"""

    def test_runs_an_asphalt_config(self, kyoukai, app_folder: Path) -> None:
        (app_folder / "config.yml").write_text(self.CONFIG)
        serving = kyoukai(["run", "--config", "config.yml"], cwd=app_folder).serving()
        assert serving["protocols"] == "HTTP/1.1, h2c"
        response = get(serving["url"], http2=True, prior_knowledge=True)
        assert response.text == "served by kyoukai run"

    def test_the_app_argument_and_options_override_the_file(self, kyoukai, app_folder: Path) -> None:
        (app_folder / "config.yml").write_text(self.CONFIG.replace("cliapp:app", "nothing_here:app"))
        command = kyoukai(["run", "cliapp:app", "--config", "config.yml", "--debug"], cwd=app_folder)
        command.tracebacks_expected = True
        response = get(command.serving()["url"] + "/fail")
        assert "a_failing_handler" in response.text

    def test_the_hello_example_config_on_another_port(self, kyoukai) -> None:
        # examples/hello/config.yml: port 4444, a development certificate, HTTP/2 over TLS.
        command = kyoukai(["run", "--config", "config.yml", "--port", "0"], cwd=EXAMPLES / "hello")
        serving = command.serving()
        assert serving["protocols"] == "HTTP/1.1, h2"
        certificate = EXAMPLES / "hello" / ".kyoukai-devcert" / "cert.pem"
        response = get(serving["url"], http2=True, verify=ssl.create_default_context(cafile=str(certificate)))
        assert (response.http_version, response.text) == ("HTTP/2", "Hello from Kyoukai!\n")

    def test_server_options_need_a_single_kyoukai_component(self) -> None:
        result = run_to_exit(["run", "--config", "examples/side_by_side/config.yml", "--port", "0"], ROOT)
        assert result.returncode == 2
        assert result.stderr.strip() == (
            "kyoukai: error: --port applies to a --config file with one kyoukai component; "
            "examples/side_by_side/config.yml has 2 Kyoukai component(s): set the options on them in the file"
        )


class TestErrors:
    @pytest.mark.parametrize(
        ("reference", "message"),
        [
            ("no_such_module_here:app", "cannot import the app 'no_such_module_here:app': No module named"),
            ("examples.hello.app:nope", "cannot find the app 'examples.hello.app:nope': examples.hello.app has no"),
            ("examples.hello.app", "the app 'examples.hello.app' is not a module:attribute reference"),
            ("examples.hello.app:index", "'examples.hello.app:index' is a Route, not a Kyoukai application"),
        ],
    )
    def test_a_bad_reference_is_one_line_and_status_2(self, reference: str, message: str) -> None:
        result = run_to_exit(["run", reference, "--port", "0"], ROOT)
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith("kyoukai: error: " + message), result.stderr
        assert result.stdout == ""

    def test_a_syntax_error_names_the_file_and_line(self, tmp_path: Path) -> None:
        (tmp_path / "broken.py").write_text("from kyoukai import Kyoukai\napp = Kyoukai('x'\n")
        result = run_to_exit(["run", "broken:app"], tmp_path)
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1, result.stderr
        assert f"SyntaxError in {tmp_path / 'broken.py'}, line" in result.stderr

    def test_an_exception_in_the_module_shows_its_own_traceback(self, tmp_path: Path) -> None:
        (tmp_path / "raising.py").write_text("def setup():\n    raise RuntimeError('no database')\n\nsetup()\n")
        result = run_to_exit(["run", "raising:app"], tmp_path)
        assert result.returncode == 2
        lines = result.stderr.splitlines()
        assert lines[0] == "Traceback (most recent call last):"
        assert "raising.py" in lines[1], "starts at the app's module, not in the import machinery"
        assert lines[-1] == "kyoukai: error: cannot import the app 'raising:app': RuntimeError: no database"

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["run"], "give the app to serve"),
            (["run", "x:app", "--port", "70000"], "--port 70000 is not a port number"),
            (["run", "x:app", "--keyfile", "key.pem"], "--keyfile needs --certfile"),
            (["run", "x:app", "--certfile", "nope.pem"], "--certfile nope.pem: no such file"),
            (["run", "--config", "nope.yml"], "--config nope.yml: no such file"),
        ],
    )
    def test_bad_options(self, tmp_path: Path, args: list[str], message: str) -> None:
        result = run_to_exit(args, tmp_path)
        assert result.returncode == 2
        assert result.stderr.startswith(f"kyoukai: error: {message}"), result.stderr
        assert result.stderr.count("\n") == 1

    def test_a_busy_port(self, app_folder: Path) -> None:
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            result = run_to_exit(["run", "cliapp:app", "--port", str(port)], app_folder)
        assert result.returncode == 2
        assert result.stderr == f"kyoukai: error: cannot listen on 127.0.0.1 port {port}: Address already in use\n"


class TestDocSamples:
    """docs/cli.rst: its samples (examples/cli) and its table of options."""

    def test_the_sample_app_with_the_debug_page(self, kyoukai) -> None:
        command = kyoukai(["run", "examples.cli.app:app", "--port", "0", "--debug"], cwd=ROOT)
        command.tracebacks_expected = True
        url = command.serving()["url"]
        assert get(url + "/divide/6/3").text == "6 / 3 = 2.0\n"
        failed = get(url + "/divide/1/0")
        assert failed.status_code == 500
        assert failed.headers["content-type"] == "text/html; charset=utf-8"
        assert "ZeroDivisionError: division by zero" in failed.text
        assert '<code class="function">divide</code>' in failed.text
        assert "<script" not in failed.text
        command.stop()
        assert "Unhandled exception in route calculator.divide" in command.stderr(), "logged as without --debug"

    def test_the_dev_config_with_another_port(self, kyoukai) -> None:
        command = kyoukai(["run", "--config", "examples/cli/dev.yml", "--port", "0"], cwd=ROOT)
        command.tracebacks_expected = True
        serving = command.serving()
        assert serving["protocols"] == "HTTP/1.1, h2c"
        assert get(serving["url"] + "/divide/6/3", http2=True, prior_knowledge=True).text == "6 / 3 = 2.0\n"
        assert "ZeroDivisionError" in get(serving["url"] + "/divide/1/0").text, "debug: true in the file"

    def test_every_option_is_in_the_table_with_its_default(self) -> None:
        page = (ROOT / "docs" / "cli.rst").read_text()
        options = set(re.findall(r"--[a-z][a-z0-9-]+", run_to_exit(["run", "--help"], ROOT).stdout)) - {"--help"}
        assert options >= {"--host", "--port", "--reload", "--no-access-log"}
        rows = dict(re.findall(r"^   \* - ``(--[a-z0-9-]+)[^`]*``.*\n     - (.+)$", page, re.M))
        assert set(rows) | {"--no-access-log"} == options
        assert (rows["--host"], rows["--port"]) == ("``127.0.0.1``", "``4444``")
        for off in ("--http2", "--dev-cert", "--debug", "--reload"):
            assert rows[off] == "off"
        assert rows["--access-log"] == "on"


class TestEntryPoints:
    def test_the_console_script(self) -> None:
        script = Path(sys.executable).with_name("kyoukai")
        assert script.is_file()
        result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=START_DEADLINE)
        assert result.returncode == 0, result.stderr
        assert "usage: kyoukai" in result.stdout and "run" in result.stdout

    def test_run_help_lists_every_option_with_its_default(self) -> None:
        result = run_to_exit(["run", "--help"], ROOT)
        assert result.returncode == 0
        help_text = " ".join(result.stdout.split())
        for option in ("--host", "--port", "--http2", "--certfile", "--keyfile", "--dev-cert", "--config"):
            assert option in help_text
        for option in ("--access-log", "--no-access-log", "--debug", "--reload"):
            assert option in help_text
        assert "(default: 127.0.0.1)" in help_text and "(default: 4444)" in help_text
