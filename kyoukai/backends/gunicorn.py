"""
A gunicorn worker that serves a Kyoukai app, or an ASGI 3 application (Starlette, FastAPI,
Quart...), over HTTP/1.1 and HTTP/2 on gunicorn's sockets.

::

    gunicorn -k kyoukai.backends.gunicorn.KyoukaiWorker -w 4 -b 127.0.0.1:8000 myapp:app
    gunicorn -k kyoukai.backends.gunicorn.KyoukaiWorker --certfile cert.pem --keyfile key.pem \\
        --http-protocols h1,h2 myapp:app
    gunicorn -k kyoukai.backends.gunicorn.KyoukaiWorker -w 2 -b 127.0.0.1:8000 config.yml

With ``myapp:app`` each worker serves the app through a :class:`~.KyoukaiComponent` (an ASGI
app is recognised as such, see :func:`~kyoukai.asgi.serve.served_application`): TLS from
``--certfile``/``--keyfile``; HTTP/2 when ``--http-protocols`` includes ``h2`` (ALPN over TLS;
prior knowledge and ``Upgrade: h2c`` on cleartext); the trusted proxies from
``--forwarded-allow-ips`` (gunicorn's default: ``127.0.0.1,::1``; ``''`` trusts none) unless the
app's config has ``forwarded_allow_ips``; every other config key (limits,
``access_log_format``...) from the app's config (``Kyoukai("app", max_body_size=...)``).

With an asphalt ``config.yml`` (a path ending in ``.yml`` or ``.yaml``) each worker starts the
root component of the file, and the Kyoukai components in it serve gunicorn's sockets: each
takes the socket bound to its ``port``, or the only one. ``--certfile``/``--keyfile`` and ``h2``
in ``--http-protocols`` apply to the components that serve gunicorn's sockets (those whose
``port`` is one of gunicorn's, or the only Kyoukai component of the file when gunicorn has one
socket); a component whose own ``ssl`` or ``http2`` setting says otherwise stops the start-up
with an error naming both, and so does a component serving one of gunicorn's sockets in
cleartext (or without HTTP/2) when gunicorn announces https (or h2).

Client certificates (``--cert-reqs``, ``--ca-certs``) are not checked by Kyoukai: a worker given
``--cert-reqs`` other than 0 refuses to start.

:class:`GunicornAdapter`, Kyoukai 2.2's adapter for gunicorn's removed ``gaiohttp`` worker, is
kept as a name that says what to run instead.

Signals, as gunicorn defines them: ``TERM`` (and the old workers of a ``HUP`` reload, and
``--max-requests`` recycling) stops gracefully: no new connections, HTTP/2 clients get GOAWAY,
requests in progress get ``--graceful-timeout`` (less a second) to finish. ``INT`` and
``QUIT`` drop the connections and exit. A heartbeat runs on the event loop, so a worker whose
loop is blocked for ``--timeout`` seconds is killed and replaced.

Logging: Kyoukai's log lines go to gunicorn's error log (unless ``config.yml`` has a
``logging`` section, which then applies as under ``asphalt run``), and the ``kyoukai.access``
lines to ``--access-logfile`` when it is given (in Kyoukai's format, see
:mod:`kyoukai.accesslog`; ``--access-logformat`` is not used).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import logging.config
import os
import signal
import ssl
import sys
from collections.abc import Iterator
from typing import Any, NoReturn

from asphalt.core import Context
from asphalt.core.component import Component, component_types
from asphalt.core.runner import policies

try:
    from gunicorn.arbiter import Arbiter
    from gunicorn.errors import AppImportError
    from gunicorn.workers.base import Worker
except ImportError as e:
    raise ImportError(
        f"kyoukai.backends.gunicorn needs gunicorn 25 or newer ({e}): pip install 'Kyoukai[gunicorn]'"
    ) from e

from kyoukai import metrics
from kyoukai.app import Kyoukai
from kyoukai.asgi.serve import ASGIApplication, served_application
from kyoukai.asphalt import KyoukaiBaseComponent, KyoukaiComponent, resolve_app_reference
from kyoukai.asphalt_config import ConfigError, load_asphalt_config
from kyoukai.backends.http2 import H2KyoukaiComponent

_CONFIG_SUFFIXES = (".yml", ".yaml")
#: The worker class, as gunicorn's ``-k`` names it.
WORKER_CLASS = "kyoukai.backends.gunicorn.KyoukaiWorker"
#: The port of a component config that gives none (that of both Kyoukai components).
_DEFAULT_PORT = 4444


def load_config(path: str) -> dict[str, Any]:
    """The ``run_application`` keyword arguments of the asphalt configuration file ``path``."""
    try:
        return load_asphalt_config(path)
    except ConfigError as e:
        raise AppImportError(str(e)) from None


GunicornTLS = tuple[str, str | None]


def apply_gunicorn_settings(
    component: dict[str, Any],
    *,
    tls: GunicornTLS | None,
    http2: bool,
    ports: set[int],
    single_socket: bool,
    source: str = "config.yml",
) -> dict[str, Any]:
    """
    A copy of the root ``component`` config of an asphalt file with gunicorn's TLS (``tls``:
    ``--certfile`` and ``--keyfile``) and HTTP/2 (``h2`` in ``--http-protocols``) applied to
    the Kyoukai components that will serve gunicorn's sockets: those whose ``port`` is in
    ``ports``, or the only Kyoukai component when gunicorn has a ``single_socket``.

    :raises gunicorn.errors.AppImportError: a component's own ``ssl`` or ``http2`` says
        otherwise (the message names the setting of each side to remove one of).
    """
    component = copy.deepcopy(component)
    entries = list(_kyoukai_entries(component, "component", None))
    targets = [entry for entry in entries if entry[1].get("port", _DEFAULT_PORT) in ports]
    if not targets and single_socket and len(entries) == 1:
        targets = entries
    for path, entry, cls in targets:
        if tls is not None:
            _apply_tls(source, path, entry, cls, tls)
        if http2 and issubclass(cls, KyoukaiComponent):
            if "http2" in entry and not entry["http2"]:
                raise AppImportError(
                    f"{source}: {path} has http2: false, but gunicorn's --http-protocols includes h2: "
                    f"remove one of them (http2 from {source}, or h2 from --http-protocols)"
                )
            entry["http2"] = True
    return component


def _kyoukai_entries(entry: dict[str, Any], path: str, default_type: str | None) -> Iterator[tuple[str, dict, type]]:
    """The Kyoukai component configs in ``entry`` and its ``components``: (path, config, class)."""
    try:
        cls = component_types.resolve(entry.get("type", default_type))
    except (LookupError, ImportError, AttributeError, ValueError, TypeError):
        cls = None  # asphalt reports a type it cannot resolve when it creates the component
    if isinstance(cls, type) and issubclass(cls, KyoukaiBaseComponent):
        yield path, entry, cls
    children = entry.get("components")
    if isinstance(children, dict):
        for alias, child in children.items():
            if child is None:
                child = children[alias] = {}
            if isinstance(child, dict):
                yield from _kyoukai_entries(child, f"{path}.components.{alias}", alias)


def _same_file(a: str | None, b: str | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and os.path.realpath(a) == os.path.realpath(b))


def _apply_tls(source: str, path: str, entry: dict[str, Any], cls: type, tls: GunicornTLS) -> None:
    certfile, keyfile = tls
    if issubclass(cls, KyoukaiComponent):
        own = entry.get("ssl")
        if own and not (
            own.get("enabled")
            and not own.get("dev_certificate")
            and _same_file(own.get("ssl_certfile"), certfile)
            and _same_file(own.get("ssl_keyfile"), keyfile)
        ):
            raise AppImportError(
                f"{source}: {path} has an ssl block of its own ({own!r}), and gunicorn was given --certfile "
                f"{certfile}: remove one of them (the ssl block from {source}, or --certfile/--keyfile)"
            )
        entry["ssl"] = {"enabled": True, "ssl_certfile": certfile, "ssl_keyfile": keyfile}
    elif issubclass(cls, H2KyoukaiComponent):
        own_files = (entry.get("ssl_certfile"), entry.get("ssl_keyfile"))
        if any(own_files) and not (_same_file(own_files[0], certfile) and _same_file(own_files[1], keyfile)):
            raise AppImportError(
                f"{source}: {path} has ssl_certfile/ssl_keyfile of its own, and gunicorn was given --certfile "
                f"{certfile}: remove one of them (from {source}, or --certfile/--keyfile)"
            )
        entry["ssl_certfile"], entry["ssl_keyfile"] = certfile, keyfile


def _replacement(what: str, target: str) -> str:
    return (
        f"{what}: Kyoukai 2.2's GunicornAdapter ran the app under gunicorn's gaiohttp worker, which gunicorn "
        f"no longer has. Serve it with Kyoukai's worker class {WORKER_CLASS} instead: "
        f"gunicorn -k {WORKER_CLASS} {target}"
    )


class GunicornAdapter:
    """Kyoukai 2.2's gunicorn adapter; using it raises :class:`RuntimeError` naming :class:`KyoukaiWorker`."""

    def __init__(self, app: Any, base_context: Any = None) -> None:
        raise RuntimeError(_replacement("GunicornAdapter(app)", "myapp:app (your module and its app)"))

    @classmethod
    def from_asphalt_config(cls, filename: str) -> NoReturn:
        """Raises :class:`RuntimeError`: serve ``filename`` with ``gunicorn -k ...KyoukaiWorker filename``."""
        raise RuntimeError(_replacement(f"GunicornAdapter.from_asphalt_config({filename!r})", filename))


class SharedSocketEventLoop(asyncio.SelectorEventLoop):
    """
    An event loop that accepts one connection each time a listening socket is ready.

    asyncio accepts up to the listen backlog at once, so of the workers that share gunicorn's
    socket, the first to wake takes a whole burst of new connections (h2load's 20 connections
    all went to one of two workers). Taking one at a time lets the others take their share, as
    gunicorn's own workers do.
    """

    def _accept_connection(self, protocol_factory: Any, sock: Any, sslcontext: Any = None, server: Any = None,
                           backlog: int = 100, *args: Any, **kwargs: Any) -> None:  # fmt: skip
        # typeshed leaves out this private method of asyncio's selector event loop.
        super()._accept_connection(protocol_factory, sock, sslcontext, server, 1, *args, **kwargs)  # type: ignore[misc]


class KyoukaiWorker(Worker):
    """A gunicorn worker running an asyncio event loop that serves Kyoukai's protocols."""

    #: Makes the event loop of each worker.
    loop_factory: Any = SharedSocketEventLoop

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Made by gunicorn's master before the fork, with gunicorn's worker arguments."""
        super().__init__(*args, **kwargs)
        self.loop: asyncio.AbstractEventLoop | None = None
        #: The asphalt configuration, in ``config.yml`` mode.
        self.asphalt_config: dict[str, Any] | None = None
        #: The components serving this worker's sockets, once started.
        self.served: list[KyoukaiBaseComponent] = []
        # Bound to the worker's event loop when first awaited (asyncio.Event takes no loop).
        self._stop_requested = asyncio.Event()
        self._quick = False

    # start-up (in the worker process)

    def _app_uri(self) -> str:
        uri = getattr(self.app, "app_uri", None) or self.cfg.wsgi_app
        if not uri:
            raise AppImportError("KyoukaiWorker needs an app reference (module:attribute) or an asphalt config.yml")
        return uri

    def gunicorn_tls(self) -> GunicornTLS | None:
        """
        gunicorn's ``--certfile`` and ``--keyfile``, ``None`` for cleartext.

        :raises gunicorn.errors.AppImportError: for settings the worker cannot honour.
        """
        cfg = self.cfg
        if cfg.cert_reqs != ssl.CERT_NONE:
            raise AppImportError(
                f"--cert-reqs {cfg.cert_reqs}: KyoukaiWorker does not check client certificates; remove "
                "--cert-reqs/--ca-certs, or check them in a proxy in front of gunicorn"
            )
        if not cfg.is_ssl:
            return None
        if not cfg.certfile:
            raise AppImportError("--keyfile needs --certfile (the certificate chain) too")
        return cfg.certfile, cfg.keyfile

    def gunicorn_http2(self) -> bool:
        """Whether ``--http-protocols`` includes ``h2``."""
        return "h2" in (self.cfg.http_protocols or ())

    def load_wsgi(self) -> None:
        """
        Import the app (``module:attribute``); nothing to do for a ``config.yml``.

        :raises gunicorn.errors.AppImportError: the reference does not resolve to a
            :class:`~.Kyoukai` app or an ASGI application (gunicorn then stops, as for any app
            that cannot load).
        """
        uri = self._app_uri()
        self.gunicorn_tls()  # refuses the TLS settings it cannot honour before anything starts
        if uri.endswith(_CONFIG_SUFFIXES):
            self.wsgi = None
            return
        try:
            app = resolve_app_reference(uri)
        except (ImportError, AttributeError, ValueError, LookupError) as e:
            raise AppImportError(f"cannot load the app {uri!r}: {e}") from e
        try:
            self.wsgi = served_application(app)
        except TypeError as e:
            raise AppImportError(f"cannot serve {uri!r}: {e}") from None

    def init_signals(self) -> None:
        """
        Make the event loop (gunicorn calls this in the worker before it loads the app) and
        handle the signals on it: ``TERM`` graceful stop, ``INT``/``QUIT`` quick stop, ``USR1``
        reopen the log files, ``ABRT`` (gunicorn's timeout) exit.
        """
        uri = self._app_uri()
        if uri.endswith(_CONFIG_SUFFIXES):
            config = load_config(uri)
            names = [listener.sock.getsockname() for listener in self.sockets]
            config["component"] = apply_gunicorn_settings(
                config["component"],
                tls=self.gunicorn_tls(),
                http2=self.gunicorn_http2(),
                ports={name[1] for name in names if isinstance(name, tuple)},
                single_socket=len(names) == 1,
                source=uri,
            )
            self.asphalt_config = config
            policy_name = self.asphalt_config.get("event_loop_policy")
            if policy_name:
                self.loop_factory = policies.resolve(policy_name)().new_event_loop
        self.loop = loop = self.loop_factory()
        asyncio.set_event_loop(loop)
        for sig in self.SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        loop.add_signal_handler(signal.SIGTERM, self._request_stop, False)
        loop.add_signal_handler(signal.SIGINT, self._request_stop, True)
        loop.add_signal_handler(signal.SIGQUIT, self._request_stop, True)
        loop.add_signal_handler(signal.SIGUSR1, self.log.reopen_files)
        loop.add_signal_handler(signal.SIGABRT, self._abort)
        # Gunicorn's master sends WINCH to itself only; a worker ignores it.
        loop.add_signal_handler(signal.SIGWINCH, lambda: None)

    def _request_stop(self, quick: bool) -> None:
        if quick and not self._quick:
            self._quick = True
            self.cfg.worker_int(self)
            for component in self.served:
                for protocol in list(component.connections):
                    protocol.abort()
        self.alive = False
        self._stop_requested.set()

    def _abort(self) -> None:
        self.alive = False
        self.cfg.worker_abort(self)
        sys.exit(1)

    # serving

    def run(self) -> None:
        """Serve until stopped; exit with gunicorn's boot error status if the components cannot start."""
        loop = self.loop
        assert loop is not None, "gunicorn calls init_signals(), which makes the loop, before run()"
        try:
            status = loop.run_until_complete(self._serve())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            metrics.flush_observers()
        if status:
            sys.exit(status)

    async def _serve(self) -> int:
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            async with Context() as ctx:
                try:
                    root = self._root_component()
                    await root.start(ctx)
                except Exception:
                    self.log.exception("The Kyoukai worker could not start its components.")
                    return Arbiter.WORKER_BOOT_ERROR
                self.served = self.served or list(KyoukaiBaseComponent.running)
                mismatch = self._served_unlike_announced()
                if mismatch is not None:
                    self.log.error("%s", mismatch)
                    return Arbiter.WORKER_BOOT_ERROR
                self._check_config()
                await self._run_until_stopped()
                # Leaving the context runs each component's graceful stop.
        finally:
            heartbeat.cancel()
        return 0

    def _root_component(self) -> Component:
        sockets = [listener.sock for listener in self.sockets]
        if self.asphalt_config is not None:
            self._configure_logging(self.asphalt_config.get("logging"))
            KyoukaiBaseComponent.inherited_sockets = sockets
            return component_types.create_object(**self.asphalt_config["component"])
        self._configure_logging(None)
        app = self.wsgi
        assert app is not None, "load_wsgi() loads the app when there is no config.yml"
        component = KyoukaiComponent(app, **self.component_options(app))
        component.listen_sockets = sockets
        self.served = [component]
        return component

    def component_options(self, app: Kyoukai | ASGIApplication) -> dict[str, Any]:
        """The config of the :class:`~.KyoukaiComponent` serving ``app``: its config and gunicorn's settings."""
        cfg = self.cfg
        options: dict[str, Any] = dict(app.config)
        options["http2"] = self.gunicorn_http2()
        tls = self.gunicorn_tls()
        if tls is not None:
            options["ssl"] = {"enabled": True, "ssl_certfile": tls[0], "ssl_keyfile": tls[1]}
        graceful = float(cfg.graceful_timeout)
        options["shutdown_timeout"] = max(graceful - 1.0, graceful / 2, 0.1)
        options.setdefault("forwarded_allow_ips", list(cfg.forwarded_allow_ips))
        return options

    def _configure_logging(self, config: Any) -> None:
        """Kyoukai's loggers into gunicorn's logs, or the ``logging`` section of ``config.yml``."""
        gunicorn_log = self.log
        if config is None:
            kyoukai_logger = logging.getLogger("kyoukai")
            for handler in gunicorn_log.error_log.handlers:
                kyoukai_logger.addHandler(handler)
            kyoukai_logger.setLevel(gunicorn_log.error_log.level)
            kyoukai_logger.propagate = False
        elif isinstance(config, dict):
            logging.config.dictConfig({**config, "disable_existing_loggers": False})
        elif config is True or isinstance(config, int):
            logging.basicConfig(level=logging.INFO if config is True else config)
        access = logging.getLogger("kyoukai.access")
        if self.cfg.accesslog is not None:
            for handler in gunicorn_log.access_log.handlers:
                access.addHandler(handler)
            access.setLevel(logging.INFO)
            access.propagate = False
        elif config is None:
            # gunicorn without --access-logfile logs no requests.
            access.setLevel(logging.WARNING)

    def _served_unlike_announced(self) -> str | None:
        """
        Why a component serving one of gunicorn's sockets does not serve what gunicorn announced
        (https, h2), or ``None``. This catches the components the config did not let the worker
        set up: ones added in code, or not on gunicorn's port.
        """
        tls, http2 = self.gunicorn_tls() is not None, self.gunicorn_http2()
        gunicorn_fds = {listener.sock.fileno() for listener in self.sockets}
        for component in self.served:
            server = component.server
            if server is None or not {sock.fileno() for sock in server.sockets} & gunicorn_fds:
                continue
            where = f"The Kyoukai component serving gunicorn's socket {_describe(server.sockets[0])}"
            fix = "give it gunicorn's port in the config so that the worker sets it up, or set it up in its own config"
            if tls and not _serves_tls(component):
                return f"{where} serves cleartext, but gunicorn was given --certfile and announces https: {fix}."
            if http2 and isinstance(component, KyoukaiComponent) and not component.http2:
                return f"{where} has http2 off, but gunicorn's --http-protocols includes h2: {fix}."
        return None

    def _check_config(self) -> None:
        """Warn about sockets no component took, and drains gunicorn would cut short."""
        graceful = self.cfg.graceful_timeout
        for component in self.served:
            if component.settings.shutdown_timeout >= graceful:
                self.log.warning(
                    "shutdown_timeout=%ss is not below gunicorn's --graceful-timeout=%ss: gunicorn may kill "
                    "the worker before its requests finish.",
                    component.settings.shutdown_timeout,
                    graceful,
                )
        for sock in KyoukaiBaseComponent.inherited_sockets:
            self.log.warning(
                "gunicorn listens on %s but no Kyoukai component in the config serves it (give one that port).",
                _describe(sock),
            )
        KyoukaiBaseComponent.inherited_sockets = []

    async def _run_until_stopped(self) -> None:
        """Wait for a stop signal, a parent change or ``--max-requests``."""
        check_every = 0.1 if self.max_requests < sys.maxsize else self._heartbeat_interval()
        while self.alive:
            if self.ppid != os.getppid():
                self.log.info("Parent changed, shutting down: %s", self)
                return
            handled = sum(component.metrics.requests for component in self.served)
            if handled >= self.max_requests:
                self.log.info("Autorestarting worker after current request (max_requests=%s).", self.max_requests)
                return
            try:
                await asyncio.wait_for(self._stop_requested.wait(), check_every)
            except TimeoutError:
                pass

    def _heartbeat_interval(self) -> float:
        # gunicorn gives the worker half of --timeout; beat at least twice within it.
        return min(self.timeout / 2, 1.0) if self.timeout else 1.0

    async def _heartbeat(self) -> None:
        """Tell the master this worker's loop runs, until the worker exits (draining included)."""
        interval = self._heartbeat_interval()
        while True:
            self.notify()
            await asyncio.sleep(interval)


def _serves_tls(component: KyoukaiBaseComponent) -> bool:
    if isinstance(component, KyoukaiComponent):
        return component.ssl_enabled
    return bool(getattr(component, "ssl_certfile", None))


def _describe(sock: Any) -> str:
    name = sock.getsockname()
    return f"{name[0]}:{name[1]}" if isinstance(name, tuple) else str(name)
