"""
Fixtures of the conformance suite: every case runs against four kinds of port, each served
once per session (servers with other settings, e.g. a short ``header_timeout``, are started on
first use and kept too):

- ``kyoukai-tls``: the TLS port of ``KyoukaiComponent(app, http2=True, ssl=...)``, ALPN ``h2``;
- ``h2-tls``: the TLS port of ``H2KyoukaiComponent(app, key, cert)``;
- ``h2c``: cleartext prior knowledge, ``H2KyoukaiComponent(app, ip=..., port=0)``;
- ``kyoukai-h2c``: the cleartext port of ``KyoukaiComponent(app, http2=True)``, which serves
  HTTP/1.1 too: prior knowledge, the HTTP/2 preface told apart from an HTTP/1.1 request.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import RunningServer, serve

from kyoukai import Kyoukai
from kyoukai.asphalt import KyoukaiComponent
from kyoukai.backends.http2 import H2KyoukaiComponent

from .h2conf import ConformanceClient

KINDS = ("kyoukai-tls", "h2-tls", "h2c", "kyoukai-h2c")
#: The kinds without TLS.
CLEARTEXT = ("h2c", "kyoukai-h2c")

#: The body of ``GET /``.
INDEX_BODY = b"conformance\n"
#: The body of ``GET /large``: larger than the default 65,535-byte windows, position-dependent.
LARGE_BODY = bytes(range(256)) * 400


def make_app() -> Kyoukai:
    app = Kyoukai("conformance")

    @app.route("/")
    async def index(ctx):
        return INDEX_BODY

    @app.route("/echo", methods=["POST"])
    async def echo(ctx):
        return ctx.request.get_data()

    @app.route("/large")
    async def large(ctx):
        return LARGE_BODY

    @app.route("/header")
    async def header(ctx):
        return ctx.request.headers.get("x-probe", "")

    @app.route("/hold", methods=["GET", "POST"], stream_body=True)
    async def hold(ctx):
        # Never answers and never reads the body: keeps the stream open (half-closed or open)
        # and its window unreturned. Cancelled when the stream is reset or the connection ends.
        await asyncio.get_running_loop().create_future()

    return app


class ServerPool:
    """Servers by (kind, settings), started on first use and stopped at the end of the session."""

    def __init__(self, tls_files: dict[str, str]) -> None:
        self.tls_files = tls_files
        self._stack = contextlib.ExitStack()
        self._servers: dict[tuple, RunningServer] = {}

    def get(self, kind: str, **cfg: Any) -> RunningServer:
        key = (kind, tuple(sorted(cfg.items())))
        server = self._servers.get(key)
        if server is None:
            files = self.tls_files
            if kind == "kyoukai-tls":
                # the same block as the ``ssl_config`` fixture of tests/conftest.py
                ssl_cfg = {"enabled": True, "ssl_certfile": files["cert"], "ssl_keyfile": files["key"]}
                manager = serve(make_app(), KyoukaiComponent, http2=True, ssl=ssl_cfg, **cfg)
            elif kind == "h2-tls":
                manager = serve(
                    make_app(), H2KyoukaiComponent, ssl_keyfile=files["key"], ssl_certfile=files["cert"], **cfg
                )
            elif kind == "h2c":
                manager = serve(make_app(), H2KyoukaiComponent, ip="127.0.0.1", port=0, **cfg)
            elif kind == "kyoukai-h2c":
                manager = serve(make_app(), KyoukaiComponent, http2=True, **cfg)
            else:
                raise ValueError(kind)
            server = self._servers[key] = self._stack.enter_context(manager)
        return server

    def close(self) -> None:
        self._stack.close()


@pytest.fixture(scope="session")
def server_pool(tls_files: dict[str, str]) -> Iterator[ServerPool]:
    pool = ServerPool(tls_files)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(scope="session")
def conformance_ssl_context(tls_files: dict[str, str]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=tls_files["ca"])


class Target:
    """One kind of port for one test: connects clients and closes them afterwards."""

    def __init__(self, kind: str, pool: ServerPool, ssl_context: ssl.SSLContext) -> None:
        self.kind = kind
        self.pool = pool
        self.tls = kind not in CLEARTEXT
        self.scheme = "https" if self.tls else "http"
        self._ssl_context = ssl_context
        self._clients: list[ConformanceClient] = []
        self.server = pool.get(kind)

    @property
    def port(self) -> int:
        return self.server.port

    def connect(self, server: RunningServer | None = None, **kwargs: Any) -> ConformanceClient:
        """A new connection (to ``server``, default this kind's shared server)."""
        port = (server or self.server).port
        client = ConformanceClient(
            port, ssl_context=self._ssl_context if self.tls else None, scheme=self.scheme, **kwargs
        )
        self._clients.append(client)
        return client

    def ready(self, **kwargs: Any) -> ConformanceClient:
        """A new connection past the handshake (server SETTINGS in, ours acknowledged)."""
        client = self.connect(**kwargs)
        client.wait_ready()
        return client

    def variant(self, **cfg: Any) -> RunningServer:
        """A server of this kind with other settings (shared by the session)."""
        return self.pool.get(self.kind, **cfg)

    def assert_serves(self, client: ConformanceClient | None = None) -> None:
        """
        The server still serves a valid request: on ``client``'s connection if it is still open,
        else on a new one.
        """
        if client is None or not client.open:
            client = self.ready()
        stream = client.get("/")
        assert stream.status == 200, stream
        assert bytes(stream.data) == INDEX_BODY

    def close(self) -> None:
        for client in self._clients:
            client.close()


@pytest.fixture(params=KINDS)
def target(request: pytest.FixtureRequest, server_pool: ServerPool, conformance_ssl_context) -> Iterator[Target]:
    t = Target(request.param, server_pool, conformance_ssl_context)
    try:
        yield t
    finally:
        t.close()


@pytest.fixture
def client(target: Target) -> ConformanceClient:
    """A connection to the target, past the handshake."""
    return target.ready()
