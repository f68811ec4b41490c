"""Getting to HTTP/2: ALPN, prior knowledge and the h2c upgrade on a shared port, ``http2: false``,
the HTTP/2-only port refusing HTTP/1.1, and the example configs run by ``asphalt run``."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import serve
from h2.errors import ErrorCodes
from h2client import (
    PREFACE,
    H2Client,
    http11_exchange,
    parse_frames,
    read_head,
    read_http11_responses,
    upgrade_request,
)
from hyperframe.frame import GoAwayFrame, SettingsFrame

from kyoukai import Kyoukai
from kyoukai.backends.http2 import H2KyoukaiComponent

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent


def make_app() -> Kyoukai:
    app = Kyoukai("h2switch")

    @app.route("/")
    async def index(ctx):
        return "index"

    @app.route("/proto")
    async def proto(ctx):
        return ctx.environ["SERVER_PROTOCOL"]

    @app.route("/echo", methods=["POST"])
    async def echo(ctx):
        return b"echo:" + ctx.request.get_data()

    @app.route("/type")
    async def content_type(ctx):
        return f"{ctx.environ.get('CONTENT_TYPE')} {ctx.environ['SERVER_PROTOCOL']}"

    return app


def connect(port: int, context: ssl.SSLContext | None = None, alpn: list[str] | None = None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if context is not None:
        if alpn is not None:
            context.set_alpn_protocols(alpn)
        sock = context.wrap_socket(sock, server_hostname="localhost")
    return sock


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


class TestALPN:
    def test_h2_and_http11_on_the_same_port(self, ssl_config, client_ssl_context: ssl.SSLContext) -> None:
        with serve(make_app(), http2=True, ssl=ssl_config) as server:
            with H2Client(server.port, ssl_context=client_ssl_context, alpn=["h2"]) as client:
                assert client.sock.selected_alpn_protocol() == "h2"
                stream = client.response(client.request("/proto", scheme="https"))
                assert stream.status == 200
                assert bytes(stream.data) == b"HTTP/2"
                assert client.remote_settings, "the server's SETTINGS frame came first"

            with connect(server.port, client_ssl_context, ["http/1.1"]) as sock:
                assert sock.selected_alpn_protocol() == "http/1.1"
                answer = http11_exchange(sock, b"GET /proto HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert answer.endswith(b"\r\n\r\nHTTP/1.1")

    def test_no_alpn_means_http11(self, ssl_config, client_ssl_context: ssl.SSLContext) -> None:
        with serve(make_app(), http2=True, ssl=ssl_config) as server:
            with connect(server.port, client_ssl_context) as sock:
                assert sock.selected_alpn_protocol() is None
                answer = http11_exchange(sock, b"GET /proto HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")

    def test_h2c_upgrade_is_ignored_over_tls(self, ssl_config, client_ssl_context: ssl.SSLContext) -> None:
        with serve(make_app(), http2=True, ssl=ssl_config) as server:
            with connect(server.port, client_ssl_context, ["http/1.1"]) as sock:
                answer = http11_exchange(sock, upgrade_request(server.port, extra="Connection: close\r\n"))
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"101" not in answer.split(b"\r\n", 1)[0]
        assert answer.endswith(b"HTTP/1.1")


class TestHTTP2Off:
    def test_prior_knowledge_preface_gets_400(self) -> None:
        with serve(make_app()) as server, connect(server.port) as sock:
            answer = http11_exchange(sock, PREFACE + SettingsFrame(0).serialize())
        assert answer.startswith(b"HTTP/1.1 400 ")

    def test_h2c_upgrade_is_served_as_http11(self) -> None:
        with serve(make_app()) as server, connect(server.port) as sock:
            sock.sendall(upgrade_request(server.port) + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            (first_head, first), (second_head, second) = read_http11_responses(sock, 2)
        assert first_head.startswith(b"HTTP/1.1 200 OK")
        assert first == b"HTTP/1.1"
        assert second_head.startswith(b"HTTP/1.1 200 OK")
        assert second == b"index"

    def test_h2_is_not_offered_by_alpn(self, ssl_config, client_ssl_context: ssl.SSLContext) -> None:
        with serve(make_app(), ssl=ssl_config) as server, connect(server.port, client_ssl_context, ["h2"]) as sock:
            assert sock.selected_alpn_protocol() is None


class TestH2CUpgrade:
    def test_curl_upgrade(self) -> None:
        with serve(make_app(), http2=True) as server:
            result = run("curl", "-sS", "-i", "--http2", server.url("/proto"))
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("HTTP/1.1 101 Switching Protocols")
        assert re.search(r"^HTTP/2 200", result.stdout, re.M)
        assert result.stdout.endswith("HTTP/2")

    def test_curl_prior_knowledge_on_the_shared_port(self) -> None:
        with serve(make_app(), http2=True) as server:
            result = run("curl", "-sS", "-i", "--http2-prior-knowledge", server.url("/proto"))
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("HTTP/2 200")
        assert result.stdout.endswith("HTTP/2")

    def test_nghttp_upgrade(self) -> None:
        with serve(make_app(), http2=True) as server:
            result = run("nghttp", "-v", "-u", server.url("/proto"))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "HTTP Upgrade success" in result.stdout
        assert re.search(r"recv \(stream_id=1\) :status: 200", result.stdout)

    def test_upgrade_then_more_streams_with_the_preface_sent_early(self) -> None:
        """The request is stream 1; a preface sent right behind the request head is not lost."""
        with serve(make_app(), http2=True) as server, connect(server.port) as sock:
            preface = PREFACE + SettingsFrame(0, settings={SettingsFrame.ENABLE_PUSH: 0}).serialize()
            sock.sendall(upgrade_request(server.port) + preface)
            head, rest = read_head(sock)
            assert head.startswith(b"HTTP/1.1 101 Switching Protocols")
            assert b"upgrade: h2c" in head.lower()
            with H2Client(server.port, sock=sock, initial_data=rest, handshake=False) as client:
                client.open_stream(1)
                first = client.response(1)
                second = client.response(client.request("/echo", "POST", body=b"after the upgrade"))
        assert first.status == 200
        assert bytes(first.data) == b"HTTP/2"
        assert second.stream_id == 3
        assert bytes(second.data) == b"echo:after the upgrade"

    def test_upgraded_request_keeps_its_content_type(self) -> None:
        with serve(make_app(), http2=True) as server, connect(server.port) as sock:
            sock.sendall(upgrade_request(server.port, "/type", extra="Content-Type: application/x-test\r\n"))
            head, rest = read_head(sock)
            assert head.startswith(b"HTTP/1.1 101 Switching Protocols")
            with H2Client(server.port, sock=sock, initial_data=rest) as client:
                client.open_stream(1)
                stream = client.response(1)
        assert bytes(stream.data) == b"application/x-test HTTP/2"

    @pytest.mark.parametrize("settings", ["AAIAAAAC", "AAIAAA"], ids=["bad-value", "bad-length"])
    def test_upgrade_with_bad_settings_is_served_as_http11(self, settings: str) -> None:
        """
        HTTP2-Settings that HTTP/2 would refuse: the request is answered over HTTP/1.1 (the
        server used to switch, then fail, leaving a connection its stop waited on).
        """
        with serve(make_app(), http2=True) as server:
            with connect(server.port) as sock:
                head = (
                    f"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                    f"Upgrade: h2c\r\nHTTP2-Settings: {settings}\r\n\r\n"
                )
                sock.sendall(head.encode() + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                responses = read_http11_responses(sock, 2)
            assert [(h.split(b"\r\n")[0], body) for h, body in responses] == [(b"HTTP/1.1 200 OK", b"index")] * 2

    def test_upgrade_with_a_body_is_declined_and_pipelining_survives(self) -> None:
        with serve(make_app(), http2=True) as server, connect(server.port) as sock:
            request = upgrade_request(server.port, "/echo", "POST", "Content-Length: 5\r\n") + b"hello"
            sock.sendall(request + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            (first_head, first), (second_head, second) = read_http11_responses(sock, 2)
        assert first_head.startswith(b"HTTP/1.1 200 OK")
        assert first == b"echo:hello"
        assert second_head.startswith(b"HTTP/1.1 200 OK")
        assert second == b"index"


class TestSharedPortPreface:
    def test_invalid_preface_after_its_first_bytes_gets_goaway(self) -> None:
        with serve(make_app(), http2=True) as server, connect(server.port) as sock:
            answer = http11_exchange(sock, PREFACE[:16] + b"XX\r\n\r\n" + SettingsFrame(0).serialize())
        assert not answer.startswith(b"HTTP/1.1"), answer
        goaways = [f for f in parse_frames(answer) if isinstance(f, GoAwayFrame)]
        assert [f.error_code for f in goaways] == [ErrorCodes.PROTOCOL_ERROR]


class TestHTTP2OnlyRefusesHTTP11:
    def test_cleartext(self) -> None:
        with serve(make_app(), H2KyoukaiComponent) as server, connect(server.port) as sock:
            answer = http11_exchange(sock, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n")
        assert b"HTTP/2 only" in answer
        assert b"Connection: close" in answer

    @pytest.mark.parametrize("alpn", [["http/1.1"], None], ids=["alpn-http1.1", "no-alpn"])
    def test_tls_without_h2(self, alpn, tls_files, client_ssl_context: ssl.SSLContext) -> None:
        cfg = {"ssl_keyfile": tls_files["key"], "ssl_certfile": tls_files["cert"]}
        with serve(make_app(), H2KyoukaiComponent, **cfg) as server:
            with connect(server.port, client_ssl_context, alpn) as sock:
                assert sock.selected_alpn_protocol() is None
                answer = http11_exchange(sock, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n")
        assert b"HTTP/2 only" in answer


# the example configs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def asphalt_run(config: Path, tmp_path: Path, ports: dict[int, int]) -> Iterator[subprocess.Popen]:
    """``asphalt run`` on ``config`` with its ports replaced, until every port accepts."""
    text = config.read_text()
    for old, new in ports.items():
        text, count = re.subn(rf"\bport: {old}\b", f"port: {new}", text)
        assert count == 1, f"port {old} not found once in {config}"
    rewritten = tmp_path / config.name
    rewritten.write_text(text)
    asphalt = Path(sys.executable).with_name("asphalt")
    command = [str(asphalt) if asphalt.exists() else shutil.which("asphalt"), "run", str(rewritten)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 20
        waiting = set(ports.values())
        while waiting:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "asphalt run did not start listening"
            for port in list(waiting):
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                    waiting.discard(port)
            if waiting:
                time.sleep(0.05)
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


EXAMPLES = ROOT / "examples"


@pytest.mark.skipif(not (EXAMPLES / "http2" / "config.yml").exists(), reason="examples/http2 not written yet")
def test_example_http2_config(tmp_path: Path) -> None:
    port = free_port()
    with asphalt_run(EXAMPLES / "http2" / "config.yml", tmp_path, {4444: port}):
        prior = run("curl", "-sS", "-i", "--http2-prior-knowledge", f"http://127.0.0.1:{port}/")
        upgrade = run("curl", "-sS", "-i", "--http2", f"http://127.0.0.1:{port}/")
    assert prior.stdout.startswith("HTTP/2 200"), prior.stdout + prior.stderr
    assert upgrade.stdout.startswith("HTTP/1.1 101"), upgrade.stdout + upgrade.stderr
    assert re.search(r"^HTTP/2 200", upgrade.stdout, re.M)


@pytest.mark.skipif(not (EXAMPLES / "side_by_side" / "config.yml").exists(), reason="examples/side_by_side not written")
def test_example_side_by_side_config(tmp_path: Path) -> None:
    http1, http2 = free_port(), free_port()
    with asphalt_run(EXAMPLES / "side_by_side" / "config.yml", tmp_path, {4444: http1, 4445: http2}):
        plain = run("curl", "-sS", "-i", f"http://127.0.0.1:{http1}/")
        h2 = run("curl", "-sS", "-i", "--http2-prior-knowledge", f"http://127.0.0.1:{http2}/")
        refused = run("curl", "-sS", "-i", "--http1.1", f"http://127.0.0.1:{http2}/")
    assert plain.stdout.startswith("HTTP/1.1 200"), plain.stdout + plain.stderr
    assert h2.stdout.startswith("HTTP/2 200"), h2.stdout + h2.stderr
    assert refused.stdout.startswith("HTTP/1.1 505"), refused.stdout + refused.stderr
