"""
ASGI applications (Starlette, FastAPI, Quart...) served on Kyoukai's own HTTP/1.1 and HTTP/2
engines.

:class:`ASGIApplication` wraps an ASGI 3 app in what the components and the backends use of a
Kyoukai app (:class:`~kyoukai.interfaces.ServedApplication`), so every port kind serves it with
its limits unchanged: ``process_request`` runs the app for one request
(:class:`~kyoukai.asgi.http_cycle.HTTPCycle`, or :class:`~kyoukai.asgi.websocket_cycle.WebSocketCycle`
for a WebSocket handshake) and returns the response the backend sends, and the component runs
the app's lifespan (:class:`~kyoukai.asgi.lifespan.Lifespan`) around serving.

:func:`served_application` decides how an object is served: ``KyoukaiComponent(app)`` and
``kyoukai run module:app`` call it with the ``interface`` config key (``auto``, ``kyoukai`` or
``asgi``).

Config keys (besides the server's): ``root_path`` (the scopes' ``root_path``, for an app served
under a prefix by a proxy that strips it), ``lifespan`` (``auto``, ``on`` or ``off``),
``disconnect_timeout`` (seconds an app may run on after its client went away before it is
cancelled; default 5), ``debug``, ``server_header``, ``access_log_format`` and
``forwarded_allow_ips`` as for Kyoukai apps.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import weakref
from typing import Any

from werkzeug.wrappers import Response

from kyoukai.accesslog import RESPONSE_KEY, START_KEY, AccessLog
from kyoukai.app import Kyoukai
from kyoukai.asgi.http_cycle import ASGIApp, ASGIResponse, HTTPCycle
from kyoukai.asgi.lifespan import MODES, Lifespan, LifespanError
from kyoukai.asgi.scope import ServeOptions
from kyoukai.asgi.websocket_cycle import WebSocketCycle
from kyoukai.proxy import TrustedProxies, rewrite_environ
from kyoukai.settings import ServerSettings
from kyoukai.util import SERVER_TOKEN
from kyoukai.websocket import CHANNEL_KEY

logger = logging.getLogger("kyoukai.asgi")

#: The values of the ``interface`` config key: how the ``app`` of a component is served.
INTERFACES = ("auto", "kyoukai", "asgi")

__all__ = ["ASGIApplication", "INTERFACES", "LifespanError", "is_asgi_app", "served_application"]


class ASGIRequest:
    """The request object of an ASGI app as the backends pass it along: its environ, nothing parsed."""

    __slots__ = ("environ",)

    def __init__(self, environ: dict[str, Any]) -> None:
        self.environ = environ


class ASGIApplication:
    """
    An ASGI 3 application, served by Kyoukai's components.

    :param app: the ASGI application (``async def app(scope, receive, send)``).
    :param server_name: the server name (:meth:`~.KyoukaiBaseComponent.get_server_name`).
    :param config: config keys (see the module documentation); the component's are merged in.
    """

    #: Makes the request object of each request.
    request_class = ASGIRequest
    #: The class of the responses made of the app's messages.
    response_class = ASGIResponse

    def __init__(self, app: ASGIApp, *, server_name: str | None = None, **config: Any) -> None:
        if not callable(app):
            raise TypeError(f"an ASGI application is a callable (scope, receive, send), not {app!r}")
        #: The ASGI application served.
        self.asgi_app = app
        self.server_name = server_name
        self.config: dict[str, Any] = config
        #: The component serving the app, once started.
        self.component: Any = None
        self.debug = False
        self.trusted_proxies = TrustedProxies()
        self.access_log = AccessLog()
        #: The settings each request uses, made by :meth:`finalize`.
        self.options = ServeOptions()
        self.lifespan = Lifespan(app)
        #: The app's tasks serving requests (a task may outlive its response: background work).
        self.tasks: set[asyncio.Task[None]] = set()
        #: The limits and timeouts: those of the component serving the app, once it started.
        self.server_settings = ServerSettings()
        self._users = 0
        self._startup: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"ASGIApplication({self.asgi_app!r})"

    def finalize(self) -> None:
        """
        Take the settings from :attr:`config` (and the limits from the component's settings).

        :raises ValueError: naming the config key and the value, for a value out of range.
        """
        config = self.config
        self.debug = bool(config.get("debug", False))
        self.trusted_proxies = TrustedProxies.from_config(config)
        self.access_log = AccessLog.from_config(config)
        root_path = config.get("root_path") or ""
        if not isinstance(root_path, str) or (root_path and not root_path.startswith("/")):
            raise ValueError(f"config key 'root_path' must be empty or a path starting with '/', not {root_path!r}")
        mode = config.get("lifespan", "auto")
        if mode not in MODES:
            raise ValueError(f"config key 'lifespan' must be one of {', '.join(MODES)}, not {mode!r}")
        timeout = config.get("disconnect_timeout", 5.0)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError(f"config key 'disconnect_timeout' must be a positive number, not {timeout!r}")
        settings = getattr(self.component, "settings", None)
        self.server_settings = settings if isinstance(settings, ServerSettings) else ServerSettings.from_config(config)
        tokens = (("Server", SERVER_TOKEN), ("X-Powered-By", SERVER_TOKEN))
        self.options = ServeOptions(
            root_path=root_path.rstrip("/"),
            server_headers=tokens if config.get("server_header", True) else (),
            max_body_size=self.server_settings.max_body_size,
            disconnect_timeout=float(timeout),
            debug=self.debug,
        )
        self.lifespan.mode = mode

    def log_route(self, request: Any, code: int) -> None:
        """Log one handled request on the ``kyoukai.access`` logger (see :mod:`kyoukai.accesslog`)."""
        self.access_log.log(request, code)

    async def process_request(self, request: Any, parent_context: Any) -> Response:
        """
        Run the app for ``request`` and return the response as soon as its head is known (its
        body follows as the app sends it); for a WebSocket, once the app refused it or, after
        accepting, returned.
        """
        environ = request.environ
        environ[START_KEY] = time.perf_counter()
        if self.trusted_proxies:
            rewrite_environ(environ, self.trusted_proxies)
        channel = environ.get(CHANNEL_KEY)
        if channel is None:
            response = await HTTPCycle(self.asgi_app, environ, self.options, self.lifespan.state).run(self.tasks)
        else:
            cycle = WebSocketCycle(self.asgi_app, environ, channel, self.options, self.lifespan.state)
            response = await cycle.run(self.tasks)
        environ[RESPONSE_KEY] = response
        self.log_route(request, response.status_code)
        return response

    async def startup(self) -> None:
        """
        The app's lifespan startup, before a component listens; once for all the components
        serving the app at the same time.

        :raises LifespanError: the startup failed (the message is the app's).
        """
        self._users += 1
        if self._startup is None:
            self._startup = asyncio.get_running_loop().create_task(self.lifespan.startup())
        try:
            await asyncio.shield(self._startup)
        except BaseException:
            self._users -= 1
            if not self._users:
                self._startup = None
            raise

    async def shutdown(self) -> None:
        """
        After the last component serving the app stopped: the app's tasks still running get
        ``shutdown_timeout`` to finish (then they are cancelled), then the lifespan shutdown.
        """
        self._users -= 1
        if self._users > 0:
            return
        self._startup = None
        timeout = self.server_settings.shutdown_timeout
        if self.tasks:
            _, pending = await asyncio.wait(set(self.tasks), timeout=timeout)
            if pending:
                logger.warning(
                    "%d task(s) of the ASGI app still running after shutdown_timeout=%ss; cancelling them.",
                    len(pending),
                    timeout,
                )
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending, timeout=1.0)
        await self.lifespan.shutdown(timeout)


def is_asgi_app(obj: object) -> bool:
    """Whether ``obj`` is an ASGI 3 application: an async callable that takes scope, receive and send."""
    if isinstance(obj, type) or not callable(obj):
        return False
    # (An instance is called through its class's __call__, which must be async.)
    if not (inspect.iscoroutinefunction(obj) or inspect.iscoroutinefunction(type(obj).__call__)):
        return False
    try:
        parameters = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return True  # no signature to check: its being async has to do
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return True
    required = [p for p in positional if p.default is p.empty]
    return len(required) <= 3 <= len(positional)


_wrapped: weakref.WeakKeyDictionary[Any, ASGIApplication] = weakref.WeakKeyDictionary()


def wrap(app: Any) -> ASGIApplication:
    """
    The :class:`ASGIApplication` of ``app``: the same one for every component serving it, so
    that its lifespan runs once however many ports serve it.
    """
    try:
        wrapper = _wrapped.get(app)
    except TypeError:  # not hashable or not weakly referable: not shared
        return ASGIApplication(app)
    if wrapper is None:
        wrapper = _wrapped[app] = ASGIApplication(app)
    return wrapper


def served_application(app: object, interface: str = "auto") -> Kyoukai | ASGIApplication:
    """
    The application a component serves for ``app``: a :class:`~.Kyoukai` app as it is, an ASGI
    3 application wrapped in an :class:`ASGIApplication`.

    :param interface: ``"auto"`` (decide from the object), ``"kyoukai"`` or ``"asgi"`` (an
        async callable that auto-detection misses, e.g. one wrapped by a plain function).
    :raises ValueError: for an unknown ``interface``.
    :raises TypeError: ``app`` is not of the kind asked for, or of no kind that can be served.
    """
    if interface not in INTERFACES:
        raise ValueError(f"config key 'interface' must be one of {', '.join(INTERFACES)}, not {interface!r}")
    if isinstance(app, Kyoukai):
        if interface == "asgi":
            raise TypeError(f"{app!r} is a Kyoukai application: interface: asgi is for ASGI applications")
        return app
    if interface == "kyoukai":
        raise TypeError(f"app must be a Kyoukai application (interface: kyoukai), not {app!r}")
    if isinstance(app, ASGIApplication):
        return app
    if is_asgi_app(app) or (interface == "asgi" and callable(app) and not isinstance(app, type)):
        return wrap(app)
    if isinstance(app, type):
        raise TypeError(
            f"app must be an application, not the class {app.__qualname__}: give an instance (an ASGI 2 "
            "class, called once per connection, is not supported: ASGI 3 apps are callables)"
        )
    raise TypeError(
        f"app must be a Kyoukai application or an ASGI 3 application (an async callable taking scope, "
        f"receive and send), or a reference to one, not {app!r}; set interface: asgi to serve an ASGI "
        "callable that is not recognised"
    )
