"""
The access log's cheap path (kyoukai.accesslog): its lines are the records logging would make,
handled as logging would; a console or file handler with a constant frame around the message
gets the text written directly. Every line is written before its response is sent, so no way of
stopping a process loses one: counted against the responses under ``kyoukai run`` (SIGTERM),
``app.run`` (SIGINT), gunicorn recycling workers (``--max-requests``) and a plain ``sys.exit``.
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import logging
import logging.handlers
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from conftest import serve
from test_examples import free_port
from werkzeug.wrappers import Request, Response

from kyoukai import Kyoukai, accesslog
from kyoukai.accesslog import AccessLog

TIMEOUT = 10.0
CLF_TIME = r"\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}"
#: basicConfig's format, as asphalt's default logging sets it up.
PREFIX = "INFO:kyoukai.access:"

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def make_app() -> Kyoukai:
    app = Kyoukai("logged")

    @app.route("/hello")
    async def hello(ctx):
        request_id.set(ctx.request.args.get("id", "-"))
        return "hello"

    @app.route("/skip")
    async def skip(ctx):
        return "skipped"

    return app


class Console(io.StringIO):
    """A console stream: counts its writes and flushes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.flushes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)

    def flush(self) -> None:
        super().flush()
        self.flushes += 1

    def lines(self) -> list[str]:
        """The access lines (the root logger at INFO also gets the server's and httpx's)."""
        return [line for line in self.getvalue().splitlines() if line.startswith(PREFIX)]


class Collector(logging.Handler):
    """A handler of the user's own: keeps every record it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def root_logging() -> Iterator[logging.Logger]:
    """The root logger and ``kyoukai.access``, restored after the test."""
    root = logging.getLogger()
    access = logging.getLogger("kyoukai.access")
    saved = (root.level, root.handlers[:], access.level, access.handlers[:], access.filters[:], access.propagate)
    try:
        yield root
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        access.setLevel(saved[2])
        access.handlers[:] = saved[3]
        access.filters[:] = saved[4]
        access.propagate = saved[5]


@pytest.fixture
def console(root_logging: logging.Logger) -> Iterator[Console]:
    """What ``logging.basicConfig(level=INFO)`` sets up, on a stream the test reads."""
    stream = Console()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
    root_logging.addHandler(handler)
    root_logging.setLevel(logging.INFO)
    logging.getLogger("kyoukai.access").setLevel(logging.NOTSET)
    yield stream


def console_handler(root: logging.Logger) -> logging.StreamHandler:
    return next(h for h in root.handlers if isinstance(getattr(h, "stream", None), Console))


def a_request(path: str = "/hello") -> Request:
    return Request({"REQUEST_METHOD": "GET", "PATH_INFO": path, "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "::1"})


class TestOnTheConsole:
    @pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
    def test_each_line_is_written_before_its_response(self, http2: bool, console: Console) -> None:
        protocol = "HTTP/2" if http2 else "HTTP/1.1"
        with serve(make_app(), http2=True) as server:
            with httpx.Client(http1=not http2, http2=http2, timeout=TIMEOUT) as client:
                for n in range(10):
                    assert client.get(server.url(f"/hello?n={n}")).status_code == 200
                    assert len(console.lines()) == n + 1
            lines = console.lines()
        for n, line in enumerate(lines):
            pattern = rf'{PREFIX}127\.0\.0\.1 - - \[{CLF_TIME}\] "GET /hello\?n={n} {protocol}" 200 5 \d+\.\d{{6}}'
            assert re.fullmatch(pattern, line), line

    async def test_nothing_is_lost_when_the_server_stops(self, console: Console) -> None:
        count = 120
        with serve(make_app(), http2=True) as server:
            async with httpx.AsyncClient(http1=False, http2=True, timeout=TIMEOUT) as client:
                urls = [server.url(f"/hello?n={n}") for n in range(count)]
                responses = await asyncio.gather(*(client.get(url) for url in urls))
            assert {response.status_code for response in responses} == {200}
        paths = sorted(int(re.search(r"n=(\d+) ", line)[1]) for line in console.lines())  # type: ignore[index]
        assert paths == list(range(count))

    def test_basic_config_takes_the_cheap_path(
        self, console: Console, root_logging: logging.Logger, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        root_logging.handlers[:] = [console_handler(root_logging)]  # without pytest's own handlers
        log = AccessLog()
        log.log(a_request("/first"), 200)  # the handler's frame is found with probe records
        monkeypatch.setattr(accesslog, "_record", lambda message: pytest.fail("a record was made"))
        for n in range(3):
            log.log(a_request(f"/n{n}"), 200)
            # Written and flushed before log() returns, as StreamHandler.emit does.
            assert (console.writes, console.flushes) == (n + 2, n + 2)
        assert [line.split('"')[1] for line in console.lines()] == [
            f"GET {path} HTTP/1.1" for path in ("/first", "/n0", "/n1", "/n2")
        ]
        assert re.fullmatch(rf'{PREFIX}::1 - - \[{CLF_TIME}\] "GET /n2 HTTP/1.1" 200 - 0\.000000', console.lines()[-1])

    @pytest.mark.parametrize(
        ("fmt", "style", "cheap"),
        [
            (logging.BASIC_FORMAT, "%", True),
            ("%(message)s", "%", True),
            ("%(levelname)-8s|%(name)s|%(process)d|%(funcName)s:%(lineno)d %(message)s %%", "%", True),
            ("{levelname} {name}: {message}", "{", True),
            ("$levelname $name $$ $message", "$", True),
            ("{levelname} {message!s:>12}", "{", False),
            ("%(message)r", "%", False),
            ("%(message).20s", "%", False),
        ],
        ids=["basic", "message", "constant-fields", "braces", "dollars", "padded", "quoted", "cut short"],
    )
    def test_the_line_is_what_the_formatter_would_write(
        self, fmt: str, style: str, cheap: bool, root_logging: logging.Logger, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        stream = Console()
        handler = logging.StreamHandler(stream)
        formatter = logging.Formatter(fmt, style=style)  # type: ignore[arg-type]
        handler.setFormatter(formatter)
        access = logging.getLogger("kyoukai.access")
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False
        AccessLog("{path}").log(a_request("/probe"), 200)
        assert (accesslog._frame(handler) is not None) is cheap
        if cheap:
            monkeypatch.setattr(accesslog, "_record", lambda message: pytest.fail("a record was made"))
        AccessLog("{path} {status}").log(a_request("/é%s{x}"), 200)
        made = access.makeRecord(
            access.name, logging.INFO, accesslog.__file__, accesslog._LOG_LINE, "", (), None, "log"
        )
        expected = []
        for message in ("/probe", "/é%s{x} 200"):
            made.msg = message
            expected.append(formatter.format(made) + "\n")
        assert stream.getvalue() == "".join(expected)

    def test_a_time_in_the_format_takes_logging_s_own_path(self, root_logging: logging.Logger) -> None:
        stream = Console()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        access = logging.getLogger("kyoukai.access")
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False
        for path in ("/one", "/two"):
            AccessLog("{path}").log(a_request(path), 200)
        assert re.fullmatch(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} /(one|two)\n){2}", stream.getvalue())
        assert accesslog._frame(handler) is None

    def test_outside_an_event_loop_too(self, console: Console) -> None:
        AccessLog().log(a_request(), 200)
        assert re.fullmatch(
            rf'{PREFIX}::1 - - \[{CLF_TIME}\] "GET /hello HTTP/1.1" 200 - 0\.000000\n', console.getvalue()
        )
        assert console.flushes == 1


class TestLoggingStillApplies:
    def test_a_handler_of_the_user_gets_every_record(self, console: Console, root_logging: logging.Logger) -> None:
        collector = Collector()
        logging.getLogger("kyoukai.access").addHandler(collector)
        with serve(make_app(), http2=True) as server:
            with httpx.Client(timeout=TIMEOUT) as client:
                for n in range(5):
                    client.get(server.url(f"/hello?n={n}"))
            server_thread = server._thread
        assert [(r.name, r.levelname, r.levelno) for r in collector.records] == [("kyoukai.access", "INFO", 20)] * 5
        messages = [r.getMessage() for r in collector.records]
        assert [PREFIX + message for message in messages] == console.lines()
        assert [re.search(r"n=(\d)", m)[1] for m in messages] == ["0", "1", "2", "3", "4"]  # type: ignore[index]
        record = collector.records[0]
        assert (record.funcName, record.filename, record.module) == ("log", "accesslog.py", "accesslog")
        assert (record.args, record.exc_info, record.stack_info) == ((), None, None)
        assert (record.thread, record.threadName) == (server_thread.ident, server_thread.name)
        assert (record.process, record.processName) == (os.getpid(), "MainProcess")
        assert time.time() - 60 < record.created <= time.time()

    def test_the_records_have_what_logging_would_give_them(self, root_logging: logging.Logger) -> None:
        made = logging.LogRecord(
            "kyoukai.access", logging.INFO, accesslog.__file__, accesslog._LOG_LINE, "m", (), None, "log"
        )
        ours = accesslog._record("m")
        assert type(ours) is logging.LogRecord
        assert vars(ours).keys() == vars(made).keys()
        timed = {"created", "msecs", "relativeCreated"}
        assert {k: v for k, v in vars(ours).items() if k not in timed} == {
            k: v for k, v in vars(made).items() if k not in timed
        }
        assert 0 <= ours.created - made.created < 1
        assert ours.msecs == int((ours.created - int(ours.created)) * 1000)
        assert ours.relativeCreated - made.relativeCreated == pytest.approx((ours.created - made.created) * 1000, abs=1)

    def test_a_record_factory_of_the_user_makes_the_records(self, root_logging: logging.Logger) -> None:
        default = logging.getLogRecordFactory()

        def factory(*args: object, **kwargs: object) -> logging.LogRecord:
            record = default(*args, **kwargs)
            record.tenant = "acme"  # type: ignore[attr-defined]
            return record

        collector = Collector()
        access = logging.getLogger("kyoukai.access")
        access.addHandler(collector)
        access.setLevel(logging.INFO)
        logging.setLogRecordFactory(factory)
        try:
            AccessLog().log(a_request(), 200)
        finally:
            logging.setLogRecordFactory(default)
        assert [(r.tenant, r.funcName) for r in collector.records] == [("acme", "log")]  # type: ignore[attr-defined]

    def test_filters_and_levels(self, console: Console, root_logging: logging.Logger) -> None:
        access = logging.getLogger("kyoukai.access")
        access.addFilter(lambda record: "/skip" not in record.getMessage())
        collector = Collector()
        access.addHandler(collector)
        console_handler(root_logging).addFilter(lambda record: '" 404 ' not in record.getMessage())
        with serve(make_app()) as server:
            with httpx.Client(timeout=TIMEOUT) as client:
                for path in ("/hello", "/skip", "/missing", "/hello"):
                    client.get(server.url(path))
        assert [m.split('"')[1] for m in map(logging.LogRecord.getMessage, collector.records)] == [
            "GET /hello HTTP/1.1",
            "GET /missing HTTP/1.1",
            "GET /hello HTTP/1.1",
        ]
        assert [line.split('"')[1] for line in console.lines()] == ["GET /hello HTTP/1.1"] * 2

        console_handler(root_logging).setLevel(logging.WARNING)
        AccessLog().log(a_request(), 200)
        assert len(collector.records) == 4 and len(console.lines()) == 2

    def test_info_off_logs_nothing(self, console: Console) -> None:
        logging.getLogger("kyoukai.access").setLevel(logging.WARNING)
        with serve(make_app()) as server:
            assert httpx.get(server.url("/hello"), timeout=TIMEOUT).status_code == 200
        assert console.lines() == []

    def test_a_handler_of_its_own_without_propagation(self, console: Console, tmp_path: Path) -> None:
        # How the gunicorn worker sets up --access-logfile.
        path = tmp_path / "access.log"
        handler = logging.FileHandler(path)
        access = logging.getLogger("kyoukai.access")
        access.addHandler(handler)
        access.propagate = False
        try:
            with serve(make_app(), http2=True) as server:
                with httpx.Client(http1=False, http2=True, timeout=TIMEOUT) as client:
                    for n in range(3):
                        client.get(server.url(f"/hello?n={n}"))
        finally:
            handler.close()
        lines = path.read_text().splitlines()
        assert [re.search(r'"GET (\S+) HTTP/2" 200 5 ', line)[1] for line in lines] == [  # type: ignore[index]
            "/hello?n=0",
            "/hello?n=1",
            "/hello?n=2",
        ]
        assert console.lines() == []

    def test_the_formatter_runs_in_the_context_of_the_request(
        self, console: Console, root_logging: logging.Logger
    ) -> None:
        class WithRequestId(logging.Formatter):
            def format(self, record: logging.LogRecord) -> str:
                return f"{super().format(record)} id={request_id.get()}"

        console_handler(root_logging).setFormatter(WithRequestId(logging.BASIC_FORMAT))
        with serve(make_app()) as server:
            httpx.get(server.url("/hello?id=abc"), timeout=TIMEOUT)
        (line,) = console.lines()
        assert re.search(r'"GET /hello\?id=abc HTTP/1.1" 200 5 \d+\.\d{6} id=abc$', line), line

    def test_a_handler_that_emits_its_own_way_gets_the_record(
        self, root_logging: logging.Logger, tmp_path: Path
    ) -> None:
        path = tmp_path / "rotating.log"
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=10_000)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access = logging.getLogger("kyoukai.access")
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        try:
            AccessLog("{path}").log(a_request("/now"), 200)
            assert path.read_text() == "/now\n"
        finally:
            handler.close()

    def test_a_handler_that_filters_its_own_way_gets_the_record(self, root_logging: logging.Logger) -> None:
        class NoHealthChecks(logging.StreamHandler):  # type: ignore[type-arg]
            def filter(self, record: logging.LogRecord) -> bool:
                return "/health" not in record.getMessage()

        stream = Console()
        handler = NoHealthChecks(stream)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access = logging.getLogger("kyoukai.access")
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False
        for path in ("/health", "/page"):
            AccessLog("{path}").log(a_request(path), 200)
        assert stream.getvalue() == "/page\n"

    def test_a_closed_file_handler_reopens_its_file(self, root_logging: logging.Logger, tmp_path: Path) -> None:
        path = tmp_path / "access.log"
        handler = logging.FileHandler(path, delay=True)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access = logging.getLogger("kyoukai.access")
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        try:
            AccessLog("{path}").log(a_request("/first"), 200)
            handler.close()
            AccessLog("{path}").log(a_request("/second"), 200)
            assert path.read_text() == "/first\n/second\n"
        finally:
            handler.close()


class TestCompiledFormat:
    @pytest.mark.parametrize(
        "fmt",
        [
            accesslog.DEFAULT_FORMAT.replace("[{time}]", ""),
            "{client}:{client_port} {user} {method!r:>8} {path!a} {query} {scheme}://{host} {status:05d}",
            "{bytes:>6} {referer} {user_agent!s} {headers[X-Request-Id]} {headers[Content-Type]} {{literal}}",
            "{duration:{status}} nested spec, {status.real} an attribute: the generic path",
            "quotes ' \" and \\ backslashes\n and a tab\t{status:\"^9}{status:'<5}{status:\\>5}",
            "",
            "no field at all",
        ],
        ids=["default", "request", "response", "generic", "quotes", "empty", "literal"],
    )
    def test_the_same_text_as_str_format(self, fmt: str) -> None:
        response = Response("Hello, world!\n")
        environ = {
            "REQUEST_METHOD": "GET",
            "kyoukai.method": "CONNECT",
            "PATH_INFO": "/é",
            "QUERY_STRING": "q=1",
            "SERVER_PROTOCOL": "HTTP/2",
            "REMOTE_ADDR": "203.0.113.9",
            "REMOTE_PORT": "50000",
            "wsgi.url_scheme": "https",
            "HTTP_HOST": "example.com",
            "HTTP_USER_AGENT": "probe/1",
            "HTTP_X_REQUEST_ID": "abc",
            accesslog.RESPONSE_KEY: response,
        }
        log = AccessLog(fmt)
        assert (
            log._render(environ, 200)
            == log._format_map(environ, 200)
            == fmt.format_map({name: compute(environ, 200) for name, compute in accesslog.FIELDS.items()})
        )

    def test_the_bytes_are_the_content_length_of_the_response(self) -> None:
        log = AccessLog("{bytes}")
        response = Response("four")
        environ = {"REQUEST_METHOD": "GET", accesslog.RESPONSE_KEY: response}
        assert log._render(environ, 200) == "4"
        for value in ("0", "not a number", ""):
            response.headers["Content-Length"] = value
            assert log._render(environ, 200) == "-"
        del response.headers["Content-Length"]
        assert log._render(environ, 200) == "-"
        response.headers["content-length"] = "12"
        assert log._render(environ, 200) == "12" and response.content_length == 12
        assert log._render(environ, 204) == log._render(environ, 101) == "-"
        assert log._render({**environ, "REQUEST_METHOD": "HEAD"}, 200) == "-"


#: An app module for the servers started in subprocesses.
APP_MODULE = """\
import asyncio
import logging
import sys

from kyoukai import Kyoukai

app = Kyoukai("counted")


@app.route("/<int:n>")
async def numbered(ctx, n):
    return f"{n}"
"""
#: A plain asyncio program: serves, answers its own requests, and leaves with sys.exit.
EXIT_SCRIPT = """\
import asyncio, logging, sys

import httpx

from counted import app

logging.basicConfig(level=logging.INFO)


async def main():
    await app.start("127.0.0.1", {port})
    async with httpx.AsyncClient(timeout=10) as client:
        responses = await asyncio.gather(*(client.get(f"http://127.0.0.1:{port}/{{n}}") for n in range({count})))
    print(sum(response.status_code == 200 for response in responses), flush=True)
    sys.exit(0)


asyncio.run(main())
"""
REQUESTS = 60
#: gunicorn's --max-requests, and how many workers the test sees recycled.
MAX_REQUESTS = 5
RECYCLED = 3


def access_lines(log: str) -> list[int]:
    """The numbers of the requests ``log`` has an access line for, sorted."""
    return sorted(int(n) for n in re.findall(r'"GET /(\d+) HTTP/(?:1\.1|2)" 200 ', log))


def wait_for_log(log: Path, process: subprocess.Popen, condition: Callable[[str], bool]) -> None:
    """Poll until ``condition`` holds for the text of ``log`` (an external process writes it)."""
    deadline = time.monotonic() + 30
    while not condition(text := log.read_text(errors="replace")):
        assert process.poll() is None, text
        assert time.monotonic() < deadline, f"the log did not get there in 30 s:\n{text}"
        time.sleep(0.05)


def wait_for_port(port: int, process: subprocess.Popen, log: Path) -> None:
    """Poll until ``process`` listens on ``port`` (it is an external process)."""
    deadline = time.monotonic() + 30
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"nothing listens on {port}:\n{log.read_text()}"
        time.sleep(0.05)


async def get_numbered(port: int, numbers: range, http2: bool) -> list[int]:
    """
    GET ``/<n>`` for each of ``numbers``, at once: the numbers answered. With ``http2``, half
    of them over HTTP/2 (prior knowledge), the rest over HTTP/1.1.
    """
    url = f"http://127.0.0.1:{port}"
    async with (
        httpx.AsyncClient(timeout=TIMEOUT) as h1,
        httpx.AsyncClient(http1=False, http2=True, timeout=TIMEOUT) as h2,
    ):
        clients = (h1, h2) if http2 else (h1,)
        responses = await asyncio.gather(*(clients[n % len(clients)].get(f"{url}/{n}") for n in numbers))
    return sorted(int(response.text) for response in responses if response.status_code == 200)


def stop(process: subprocess.Popen, sig: int, log: Path) -> str:
    """Send ``sig`` (a graceful stop), wait for a clean exit; the log."""
    process.send_signal(sig)
    try:
        code = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"no exit within 30 s of {sig!r}:\n{log.read_text()}")
    output = log.read_text(errors="replace")
    assert code == 0, output
    assert "Traceback" not in output, output
    return output


@pytest.fixture
def app_folder(tmp_path: Path) -> Path:
    (tmp_path / "counted.py").write_text(APP_MODULE)
    return tmp_path


class TestNoLineIsLost:
    @pytest.mark.parametrize(
        ("command", "sig", "http2"),
        [
            (["-m", "kyoukai", "run", "counted:app", "--http2", "--port", "{port}"], signal.SIGTERM, True),
            (["-c", "from counted import app; app.run(port={port}, loop='asyncio')"], signal.SIGINT, False),
        ],
        ids=["kyoukai-run-sigterm", "app-run-sigint"],
    )
    async def test_a_graceful_stop(self, command: list[str], sig: int, http2: bool, app_folder: Path) -> None:
        port = free_port()
        log = app_folder / "server.log"
        with log.open("wb") as output:
            args = [sys.executable, *(arg.format(port=port) for arg in command)]
            process = subprocess.Popen(args, cwd=app_folder, stdout=output, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, process, log)
            answered = await get_numbered(port, range(REQUESTS), http2)
            before_the_stop = access_lines(log.read_text(errors="replace"))
        finally:
            output_text = stop(process, sig, log)
        assert answered == list(range(REQUESTS)), output_text
        # Each line was out before its response; the stop adds none and loses none.
        assert before_the_stop == answered == access_lines(output_text), output_text

    def test_sys_exit(self, app_folder: Path) -> None:
        port = free_port()
        script = EXIT_SCRIPT.format(port=port, count=REQUESTS)
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=app_folder, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert int(done.stdout) == REQUESTS
        assert access_lines(done.stderr) == list(range(REQUESTS)), done.stderr

    async def test_gunicorn_recycling_workers(self, app_folder: Path) -> None:
        port = free_port()
        log = app_folder / "gunicorn.log"
        command = [sys.executable, "-m", "gunicorn", "-k", "kyoukai.backends.gunicorn.KyoukaiWorker", "-w", "1"]
        command += ["-b", f"127.0.0.1:{port}", "--no-control-socket", "--max-requests", str(MAX_REQUESTS)]
        command += ["--max-requests-jitter", "0", "--access-logfile", "-", "counted:app"]
        with log.open("wb") as output:
            process = subprocess.Popen(command, cwd=app_folder, stdout=output, stderr=subprocess.STDOUT)
        answered = []
        try:
            wait_for_port(port, process, log)
            limits = httpx.Limits(max_keepalive_connections=0)
            async with httpx.AsyncClient(timeout=TIMEOUT, limits=limits) as client:
                for recycled in range(1, RECYCLED + 2):
                    for n in range(len(answered), recycled * MAX_REQUESTS):
                        answered.append(int((await client.get(f"http://127.0.0.1:{port}/{n}")).text))
                    if recycled <= RECYCLED:
                        # The worker exits once it sees its count reached, and a new one serves.
                        wait_for_log(
                            log,
                            process,
                            lambda text, recycled=recycled: (
                                text.count("Worker exiting") == recycled
                                and text.count("Booting worker") == recycled + 1
                            ),
                        )
            before_the_stop = log.read_text(errors="replace")
        finally:
            output_text = stop(process, signal.SIGTERM, log)
        assert answered == list(range((RECYCLED + 1) * MAX_REQUESTS)), output_text
        assert before_the_stop.count("Autorestarting worker after current request") == RECYCLED, output_text
        # Every line of a recycled worker was out before it exited.
        assert access_lines(before_the_stop) == answered == access_lines(output_text), output_text
