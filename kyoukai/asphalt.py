"""The asphalt components that serve a Kyoukai application."""

from __future__ import annotations

import abc
import asyncio
import importlib
import logging
import os
import socket
import ssl
import sys
import weakref
from typing import Any, ClassVar

from asphalt.core import Component, Context, Signal, resolve_reference

from kyoukai import debugpage, loops
from kyoukai.app import Kyoukai
from kyoukai.asgi.serve import ASGIApplication, served_application

# Kyoukai 2.2 defined the request context and the events here; they live in kyoukai.context and
# kyoukai.events now, and are re-exported (the "X as X" form) so that 2.2 imports keep working.
from kyoukai.context import HTTPRequestContext as HTTPRequestContext
from kyoukai.events import ConnectionLostEvent, ConnectionMadeEvent
from kyoukai.events import CtxEvent as CtxEvent
from kyoukai.events import RouteInvokedEvent as RouteInvokedEvent
from kyoukai.events import RouteMatchedEvent as RouteMatchedEvent
from kyoukai.events import RouteReturnedEvent as RouteReturnedEvent
from kyoukai.interfaces import ServedApplication
from kyoukai.metrics import Metrics
from kyoukai.settings import ServerSettings
from kyoukai.tls import create_server_context

logger = logging.getLogger("kyoukai")

DEFAULT_BACKEND = "kyoukai.backends.httptools_"


def resolve_app_reference(reference: str) -> Any:
    """
    Resolve ``"module:attribute"``, importing from the working directory too, as
    ``asphalt run config.yml`` next to the app's module expects.
    """
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    return resolve_reference(reference)


class KyoukaiBaseComponent(Component, metaclass=abc.ABCMeta):
    """
    The base of Kyoukai's components: holds the app, the address, the settings and the open
    connections, and dispatches ``connection_made`` / ``connection_lost`` for every protocol.

    :param app: the :class:`~.Kyoukai` app or an ASGI 3 application (Starlette, FastAPI,
        Quart...), or a ``"module:attribute"`` reference to one.
    :param ip: the address to listen on.
    :param port: the port to listen on (0 picks a free one; :attr:`port` then holds it).
    :param cfg: further config keys: the :class:`~.ServerSettings` limits and the keys each
        component documents; ``interface`` (``auto``, ``kyoukai`` or ``asgi``) says how ``app``
        is served (see :func:`~kyoukai.asgi.serve.served_application`).
    """

    connection_made = Signal(ConnectionMadeEvent)
    connection_lost = Signal(ConnectionLostEvent)

    #: The components currently serving, in this process.
    running: ClassVar[weakref.WeakSet[KyoukaiBaseComponent]] = weakref.WeakSet()
    #: Listening sockets handed over by a process manager (the gunicorn worker): a component
    #: started while this is set listens on the one bound to its port instead of binding.
    inherited_sockets: ClassVar[list[socket.socket]] = []

    def __init__(self, app: object, ip: str = "127.0.0.1", port: int = 4444, **cfg: Any) -> None:
        if isinstance(app, str):
            app = resolve_app_reference(app)
        #: The application served: a :class:`~.Kyoukai` app, or an :class:`~.ASGIApplication`.
        self.app: ServedApplication = served_application(app, cfg.get("interface", "auto"))
        self.ip = ip
        self.port = port
        self.cfg = cfg
        #: The limits and timeouts, from the config keys.
        self.settings = ServerSettings.from_config(cfg)
        #: The :class:`asyncio.Server`, once started (the first, when serving several sockets).
        self.server: asyncio.Server | None = None
        self._servers: list[asyncio.Server] = []
        #: Already-bound sockets to serve instead of binding ``ip:port``.
        self.listen_sockets: list[socket.socket] | None = None
        #: Bind with ``SO_REUSEPORT`` so several processes can serve one port (config key
        #: ``reuse_port``).
        self.reuse_port = bool(cfg.get("reuse_port", False))
        #: Traffic counters (see :class:`~.Metrics`).
        self.metrics = Metrics()
        #: The context the component was started in; parent of every request context.
        self.base_context: Context | None = None
        #: The protocol objects of the open connections.
        self.connections: set[Any] = set()
        self._all_closed: asyncio.Event | None = None
        self._server_name: str | None = None
        self.logger = logger

    @abc.abstractmethod
    async def start(self, ctx: Context) -> None:
        """Start serving."""

    def get_server_name(self) -> str:
        """
        The server name of this app: its ``server_name``, else this host's fully qualified
        name. The host name is looked up on the first call, not at start: the lookup is a
        blocking DNS query, and loading the resolver costs about 0.5 MiB.
        """
        if self.app.server_name:
            return self.app.server_name
        if self._server_name is None:
            self._server_name = socket.getfqdn()
        return self._server_name

    # connection bookkeeping, called by the protocols

    def connection_opened(self, protocol: Any) -> None:
        """Record a new connection and dispatch ``connection_made``."""
        self.connections.add(protocol)
        self.metrics.connections_opened += 1
        signal = self.connection_made
        if signal.listeners:  # (asphalt makes an event, a closure and a future for none)
            signal.dispatch(protocol=protocol)
        if self.server is None and self._all_closed is not None:
            # Accepted before stop() closed the listener, made after it told the others to finish.
            protocol.shutdown()

    def connection_closed(self, protocol: Any) -> None:
        """Forget a connection and dispatch ``connection_lost``."""
        if protocol in self.connections:
            self.connections.discard(protocol)
            self.metrics.connections_closed += 1
            signal = self.connection_lost
            if signal.listeners:
                signal.dispatch(protocol=protocol)
        if not self.connections and self._all_closed is not None:
            self._all_closed.set()

    def connection_handed_over(self, old: Any, new: Any) -> None:
        """A connection changed protocol object (HTTP/1.1 to HTTP/2); no signal is sent."""
        self.connections.discard(old)
        self.connections.add(new)

    async def _start_app(self, ctx: Context) -> None:
        """
        Give the app its config and this component; an ASGI app's lifespan startup runs here,
        before anything listens (and its shutdown after the component stopped).
        """
        self.base_context = ctx
        self.app.component = self
        self.app.config.update(self.cfg)
        self.app.finalize()
        if isinstance(self.app, ASGIApplication):
            await self.app.startup()
            ctx.add_teardown_callback(self.app.shutdown)

    async def _serve(self, ctx: Context, protocol_factory: Any, ssl_context: ssl.SSLContext | None) -> None:
        await self._start_app(ctx)
        loop = asyncio.get_running_loop()
        # The TLS handshake comes before any protocol timer runs: bound it by header_timeout too,
        # or a client that never finishes it holds a socket for asyncio's default 60 s.
        handshake_timeout = self.settings.header_timeout if ssl_context is not None else None
        options: dict[str, Any] = {"ssl": ssl_context, "ssl_handshake_timeout": handshake_timeout, "backlog": 1024}
        sockets = self.listen_sockets or self._take_inherited_sockets()
        if sockets:
            self._servers = [await loop.create_server(protocol_factory, sock=sock, **options) for sock in sockets]
        else:
            server = await loop.create_server(
                protocol_factory, self.ip, self.port, reuse_port=self.reuse_port or None, **options
            )
            self._servers = [server]
        self.server = self._servers[0]
        self.port = self.server.sockets[0].getsockname()[1]
        KyoukaiBaseComponent.running.add(self)
        ctx.add_teardown_callback(self.stop)
        scheme = "https" if ssl_context is not None else "http"
        logger.info("Kyoukai serving %s on %s://%s:%d.", self.describe(), scheme, self.ip or "*", self.port)
        if loops.hint_uvloop(asyncio.get_running_loop()):
            logger.info(
                "uvloop is installed but this event loop is asyncio's: 'asphalt run --loop uvloop', or the "
                "top-level key 'event_loop_policy: uvloop' in the configuration, serves faster (kyoukai run "
                "and app.run() pick uvloop by themselves)."
            )
        if self.app.debug:
            debugpage.warn_if_exposed(sock for server in self._servers for sock in server.sockets)

    def describe(self) -> str:
        """What this component serves, for the start-up log line."""
        return "HTTP/1.1"

    def _take_inherited_sockets(self) -> list[socket.socket]:
        """The inherited sockets bound to this component's port (the only one, if just one was inherited)."""
        inherited = KyoukaiBaseComponent.inherited_sockets
        mine = [s for s in inherited if s.getsockname()[1] == self.port]
        if not mine and len(inherited) == 1:
            mine = list(inherited)  # a copy: the loop below empties the list it iterates otherwise
        for sock in mine:
            inherited.remove(sock)
        return mine

    async def stop(self) -> None:
        """
        Stop accepting connections, let in-flight requests finish within ``shutdown_timeout``,
        then close whatever is left.
        """
        if self.server is None:
            return
        servers, self._servers, self.server = self._servers, [], None
        KyoukaiBaseComponent.running.discard(self)
        # Stop accepting first, then let the connections accepted already get their transports:
        # asyncio (3.11) drops one whose transport is made after Server.close(), leaving its
        # client hanging on a socket nobody serves.
        loop = asyncio.get_running_loop()
        for server in servers:
            for sock in server.sockets:
                loop.remove_reader(sock.fileno())
        await asyncio.sleep(0)
        for server in servers:
            server.close()
        self._all_closed = asyncio.Event()
        for protocol in list(self.connections):
            protocol.shutdown()
        if self.connections:
            try:
                await asyncio.wait_for(self._all_closed.wait(), self.settings.shutdown_timeout)
            except TimeoutError:
                logger.warning(
                    "%d connection(s) still busy after shutdown_timeout=%ss; closing them.",
                    len(self.connections),
                    self.settings.shutdown_timeout,
                )
                tasks = [task for protocol in self.connections for task in protocol.running_tasks()]
                for protocol in list(self.connections):
                    protocol.abort()
                # Aborting cancels the connections' tasks: let them unwind now, or a streaming
                # body's generator is left suspended for the loop's shutdown to trip over.
                if tasks:
                    await asyncio.wait(tasks, timeout=1.0)
        for server in servers:
            await server.wait_closed()


class KyoukaiComponent(KyoukaiBaseComponent):
    """
    Serves the app over HTTP/1.1, and over HTTP/2 too when ``http2`` is true.

    Config keys, besides the :class:`~.ServerSettings` limits:

    - ``ssl``: ``{enabled: true, ssl_certfile: ..., ssl_keyfile: ...}`` serves over TLS.
    - ``http2``: ``true`` offers HTTP/2: ALPN ``h2`` over TLS; prior knowledge and
      ``Upgrade: h2c`` on cleartext. Default ``false``: HTTP/1.1 only.
    - ``run_server``: ``false`` starts the component without listening.
    - ``backend``: the module holding the HTTP/1.1 protocol (``PROTOCOL_CLASS``).
    - ``debug``, ``server_header`` (``false`` drops ``Server``/``X-Powered-By``): app settings.
    """

    def __init__(self, app: object, ip: str = "127.0.0.1", port: int = 4444, **cfg: Any) -> None:
        super().__init__(app, ip, port, **cfg)
        self.http2 = bool(cfg.get("http2", False))
        self.run_server = bool(cfg.get("run_server", True))
        self.backend = cfg.get("backend", DEFAULT_BACKEND)
        ssl_cfg = cfg.get("ssl") or {}
        self.ssl_enabled = bool(ssl_cfg.get("enabled", False))
        self.ssl_certfile = ssl_cfg.get("ssl_certfile")
        self.ssl_keyfile = ssl_cfg.get("ssl_keyfile")
        #: Serve with a self-signed development certificate (``ssl: {dev_certificate: true}``),
        #: made on first start in ``dev_certificate_dir``; never used unless asked for.
        self.dev_certificate = bool(ssl_cfg.get("dev_certificate", False))
        self.dev_certificate_dir = ssl_cfg.get("dev_certificate_dir", ".kyoukai-devcert")
        if self.ssl_enabled and not self.ssl_certfile and not self.dev_certificate:
            raise ValueError("config key 'ssl' has enabled: true but no ssl_certfile (or dev_certificate: true)")
        self._protocol_class = importlib.import_module(self.backend).PROTOCOL_CLASS
        if isinstance(self._protocol_class, str):
            self._protocol_class = getattr(importlib.import_module(self.backend), self._protocol_class)

    def describe(self) -> str:
        return "HTTP/1.1 and HTTP/2" if self.http2 else "HTTP/1.1"

    def create_ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context from the ``ssl`` config block, ``None`` for cleartext."""
        if not self.ssl_enabled:
            return None
        if not self.ssl_certfile:
            from kyoukai import devcert

            paths = devcert.ensure(self.dev_certificate_dir)
            logger.warning(
                "Serving with a self-signed development certificate from %s: for development only.",
                paths.certfile.parent,
            )
            self.ssl_certfile, self.ssl_keyfile = str(paths.certfile), str(paths.keyfile)
        alpn = ("h2", "http/1.1") if self.http2 else ("http/1.1",)
        return create_server_context(self.ssl_certfile, self.ssl_keyfile, alpn_protocols=alpn)

    def get_protocol(self, ctx: Context) -> Any:
        """A protocol object for a new connection."""
        return self._protocol_class(self, ctx)

    async def start(self, ctx: Context) -> None:
        """Start listening (unless ``run_server`` is false)."""
        if not self.run_server:
            await self._start_app(ctx)
            return
        await self._serve(ctx, lambda: self.get_protocol(ctx), self.create_ssl_context())


# Kyoukai.run() and Kyoukai.start() serve with this component when given none.
Kyoukai.component_factory = KyoukaiComponent
