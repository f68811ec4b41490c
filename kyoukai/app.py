"""The application object: routes requests through the blueprint tree to their handlers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, cast

from asphalt.core import Component, Context
from werkzeug.exceptions import HTTPException, InternalServerError, MethodNotAllowed
from werkzeug.routing import Map, RequestRedirect
from werkzeug.wrappers import Request, Response

from kyoukai import debugpage, loops
from kyoukai.accesslog import RESPONSE_KEY, START_KEY, AccessLog
from kyoukai.blueprint import Blueprint
from kyoukai.body import RequestBody
from kyoukai.context import HTTPRequestContext
from kyoukai.proxy import TrustedProxies, apply_forwarded
from kyoukai.runner import Runner
from kyoukai.util import SERVER_TOKEN, InvalidReturnValue
from kyoukai.version import __version__ as __version__  # where Kyoukai 2.2 had it
from kyoukai.websocket import invoke_websocket_route
from kyoukai.wsgi import PREPARED_KEY, ResponseParts, prepare_response

if TYPE_CHECKING:
    from kyoukai.asgi.app_adapter import KyoukaiASGI

logger = logging.getLogger("kyoukai")

_ROOT_FORWARDED = frozenset(
    {
        "route",
        "errorhandler",
        "add_errorhandler",
        "add_route",
        "wrap_route",
        "url_for",
        "before_request",
        "after_request",
        "add_hook",
        "add_route_group",
        "websocket",
        "add_static",
    }
)


class Kyoukai:
    """
    A Kyoukai application.

    :param application_name: the name of the root blueprint (the endpoint prefix of routes
        registered on the app itself).
    :param server_name: the server name for ``url_for`` and the components.
    :param kwargs: ``host`` and ``host_matching`` (for the root blueprint), ``request_class``,
        ``response_class``, ``context_class``; anything else is kept in :attr:`config`.

    ``route``, ``errorhandler``, ``add_errorhandler``, ``add_route``, ``wrap_route``,
    ``url_for``, ``before_request``, ``after_request``, ``add_hook``, ``add_route_group``,
    ``add_static`` and ``websocket`` are those of the root blueprint.
    """

    #: The request class (a :class:`werkzeug.wrappers.Request` subclass).
    request_class: type[Request] = Request
    #: The response class used to wrap plain return values.
    response_class: type[Response] = Response
    #: Makes the component :meth:`start` and :meth:`run` serve with when given none, called as
    #: ``component_factory(app, ip, port)``. :mod:`kyoukai.asphalt` sets it to
    #: :class:`~.KyoukaiComponent` (that module imports this one, so this one cannot import it).
    component_factory: ClassVar[Callable[[Kyoukai, str, int], Component] | None] = None

    def __init__(self, application_name: str, *, server_name: str | None = None, **kwargs: Any) -> None:
        self.name = application_name
        self.server_name = server_name
        self._root_bp = Blueprint(
            application_name, host=kwargs.pop("host", None), host_matching=kwargs.pop("host_matching", False)
        )
        self.request_class = kwargs.pop("request_class", self.request_class)
        self.response_class = kwargs.pop("response_class", self.response_class)
        self.context_class: type[HTTPRequestContext] = kwargs.pop("context_class", HTTPRequestContext)
        #: The component serving this app (a :class:`~.KyoukaiBaseComponent`), once started.
        self.component: Component | None = None
        self.debug = False
        # Kyoukai 2.2 took a ``loop``; none is needed now, but app.loop falls back on it.
        self._loop: asyncio.AbstractEventLoop | None = kwargs.pop("loop", None)
        #: Extra configuration (the component's keys are merged in when it starts).
        self.config: dict[str, Any] = kwargs
        #: The proxies whose forwarding headers are believed (config key ``forwarded_allow_ips``).
        self.trusted_proxies = TrustedProxies()
        #: The access log (config key ``access_log_format``).
        self.access_log = AccessLog()

    def __getattr__(self, item: str) -> Any:
        if item in _ROOT_FORWARDED:
            return getattr(self.root, item)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {item!r}")

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """
        The event loop serving the app: the running one, else the one the app was last
        finalized in (the component finalizes it when it starts).

        :raises RuntimeError: before the app has been served or finalized in a loop.
        """
        try:
            return asyncio.get_running_loop()
        except RuntimeError:
            if self._loop is None:
                raise RuntimeError(
                    "app.loop: the app has no event loop yet; it gets one when a component starts serving it"
                ) from None
            return self._loop

    @cached_property
    def asgi(self) -> KyoukaiASGI:
        """The app as an ASGI 3 application, for uvicorn, Hypercorn, granian... (see :func:`~kyoukai.asgi.to_asgi`)."""
        # Imported here: the adapter's package is not needed to serve on Kyoukai's own engines.
        from kyoukai.asgi.app_adapter import to_asgi

        return to_asgi(self)

    @property
    def root(self) -> Blueprint:
        """The root :class:`~.Blueprint`."""
        return self._root_bp

    def register_blueprint(self, child: Blueprint) -> Blueprint:
        """Add ``child`` under the root blueprint."""
        return self.root.add_child(child)

    def finalize(self, **map_options: Any) -> Map:
        """Build the routing map (see :meth:`.Blueprint.finalize`)."""
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            pass
        self.debug = bool(self.config.get("debug", self.debug))
        self.trusted_proxies = TrustedProxies.from_config(self.config)
        self.access_log = AccessLog.from_config(self.config)
        return self.root.finalize(**map_options)

    def log_route(self, request: Request, code: int) -> None:
        """Log one handled request on the ``kyoukai.access`` logger (see :mod:`kyoukai.accesslog`)."""
        self.access_log.log(request, code)

    async def handle_httpexception(
        self, ctx: HTTPRequestContext, exception: HTTPException, environ: dict | None = None
    ) -> Response:
        """
        The response for an HTTP error: the nearest error handler's (from the matched route's
        blueprint up to the root), or werkzeug's default page. A handler that fails gives the
        default page of its own error.
        """
        if environ is None:
            environ = ctx.environ
        bp = ctx.bp or self.root
        handler = bp.get_errorhandler(exception) or self.root.get_errorhandler(exception)
        if handler is None:
            return exception.get_response(environ)
        try:
            response = await handler.invoke(ctx, args=(exception,), status=exception.code or 500)
        except HTTPException as e:
            logger.warning("The error handler for %s raised %r; sending its response.", exception.code, e)
            return e.get_response(environ)
        except Exception:
            logger.exception("The error handler for %s failed.", exception.code)
            return InternalServerError().get_response(environ)
        if isinstance(exception, MethodNotAllowed) and exception.valid_methods and response.status_code == 405:
            # A 405 must list the allowed methods, whatever the handler's body.
            response.headers.setdefault("Allow", ", ".join(exception.valid_methods))
        return response

    async def process_request(self, request: Request, parent_context: Context | None) -> Response:
        """
        Route ``request`` to its handler and return the response; never raises for a request
        the handler or the routing rejects (those become error responses).
        """
        if not self.root.finalized:
            self.finalize()
        request.environ[START_KEY] = time.perf_counter()
        if self.trusted_proxies:
            apply_forwarded(request, self.trusted_proxies)
        ctx = self.context_class(parent_context, request)
        ctx.app = self
        async with ctx:
            try:
                result = await self._dispatch(ctx, request)
            finally:
                # Uploaded files are spooled to temporary files: release them with the request.
                request.close()
            self._add_server_headers(result)
            environ = request.environ
            try:
                parts = prepare_response(result, environ)
            except Exception as e:
                # Found now, this is a 500 that the access log records as such.
                result, parts = await self._unsendable(ctx, result, e)
            environ[PREPARED_KEY] = (result, parts)
            environ[RESPONSE_KEY] = result
            self.log_route(request, result.status_code)
            return result

    def _add_server_headers(self, response: Response) -> None:
        if self.config.get("server_header", True):
            # The app's own values win (RFC 9110 section 10.2.4 allows one Server field).
            headers = response.headers
            fields = getattr(headers, "_list", None)
            if type(fields) is list:
                # werkzeug's Headers keeps its fields in this list: one pass over it, and the two
                # constant fields appended as they are (``add`` would check them every time;
                # prepare_response checks every field before it goes out).
                server = powered = False
                for name, _ in fields:
                    lowered = name.lower()
                    if lowered == "server":
                        server = True
                    elif lowered == "x-powered-by":
                        powered = True
                if not server:
                    fields.append(("Server", SERVER_TOKEN))
                if not powered:
                    fields.append(("X-Powered-By", SERVER_TOKEN))
                return
            present = set(headers.keys(lower=True))
            if "server" not in present:
                headers.add("Server", SERVER_TOKEN)
            if "x-powered-by" not in present:
                headers.add("X-Powered-By", SERVER_TOKEN)

    async def _unsendable(
        self, ctx: HTTPRequestContext, response: Response, error: Exception
    ) -> tuple[Response, ResponseParts]:
        """The 500 (and its parts) that replaces a response whose head or body cannot be sent."""
        response.close()
        environ = ctx.environ
        where = f"route {ctx.route.get_endpoint_name()!r}" if ctx.route is not None else "the request"
        logger.error(
            "The response of %s to %s %s cannot be sent (%s: %s); sending 500 instead.",
            where,
            environ["REQUEST_METHOD"],
            environ["PATH_INFO"],
            type(error).__name__,
            error,
        )
        replacement = await self.handle_httpexception(ctx, InternalServerError(original_exception=error), environ)
        self._add_server_headers(replacement)
        try:
            return replacement, prepare_response(replacement, environ)
        except Exception:
            logger.error("The 500 error handler's response cannot be sent either; sending the default page.")
            replacement.close()
        replacement = InternalServerError().get_response(environ)
        self._add_server_headers(replacement)
        return replacement, prepare_response(replacement, environ)

    async def _dispatch(self, ctx: HTTPRequestContext, request: Request) -> Response:
        environ = request.environ
        try:
            route, params, rule = self.root.match(environ)
        except RequestRedirect as e:
            return e.get_response(environ)
        except MethodNotAllowed as e:
            if request.method == "OPTIONS":
                return self._options_response(e.valid_methods)
            logger.debug("No rule for %s %s allows the method.", request.method, request.path)
            ctx.bp = self.root.find_by_path(request.path)
            return await self.handle_httpexception(ctx, e, environ)
        except HTTPException as e:
            # NotFound, and the other routing errors (e.g. a websocket request to a plain rule);
            # the blueprint whose prefix the path falls under handles them.
            ctx.bp = self.root.find_by_path(request.path)
            return await self.handle_httpexception(ctx, e, environ)

        # Only blueprints register routes: the owner a route knows as a RouteOwner is a Blueprint.
        ctx.params, ctx.rule, ctx.route, ctx.bp = params, rule, route, cast("Blueprint | None", route.bp)
        ctx.emit("route_matched")
        try:
            if request.method == "OPTIONS" and "OPTIONS" not in (rule.methods or ()):
                return self._options_response(rule.methods)
            if route.websocket:
                ctx.emit("route_invoked")
                result = await invoke_websocket_route(ctx, route, params)
            else:
                if not route.stream_body:
                    stream = environ["wsgi.input"]
                    if isinstance(stream, RequestBody):
                        await stream.read_all()
                ctx.emit("route_invoked")
                result = await route.invoke(ctx, params=params)
        except InvalidReturnValue as e:
            logger.error("%s; sending 500 instead.", str(e)[0].upper() + str(e)[1:])
            return await self.handle_httpexception(ctx, InternalServerError(original_exception=e), environ)
        except HTTPException as e:
            logger.debug("Route %s raised %r.", route.get_endpoint_name(), e)
            return await self.handle_httpexception(ctx, e, environ)
        except Exception as e:
            logger.exception("Unhandled exception in route %s.", route.get_endpoint_name())
            error = InternalServerError(original_exception=e)
            # With debug on, the traceback page replaces werkzeug's default 500 page only: an
            # app's own 500 handler still answers.
            bp = ctx.bp or self.root
            if self.debug and not (bp.get_errorhandler(error) or self.root.get_errorhandler(error)):
                return self.response_class(debugpage.render(e), status=500, content_type=debugpage.CONTENT_TYPE)
            return await self.handle_httpexception(ctx, error, environ)
        ctx.emit("route_completed", result=result)
        return result

    def _options_response(self, methods: Any) -> Response:
        allowed = sorted(set(methods or ()) | {"OPTIONS"})
        return self.response_class(status=204, headers={"Allow": ", ".join(allowed)})

    async def start(
        self,
        ip: str = "127.0.0.1",
        port: int = 4444,
        *,
        component: Component | None = None,
        base_context: Context | None = None,
    ) -> None:
        """Start serving from inside a running event loop (without asphalt's runner)."""
        if component is None:
            component = self._default_component(ip, port)
        self.component = component
        await component.start(base_context if base_context is not None else Context())

    def run(
        self,
        ip: str = "127.0.0.1",
        port: int = 4444,
        *,
        component: Component | None = None,
        loop: str | None = None,
    ) -> None:
        """
        Serve until SIGINT or SIGTERM, then stop gracefully (a second Ctrl-C stops at once), through
        :class:`kyoukai.runner.Runner`, which takes the arguments of asphalt's
        :func:`~asphalt.core.run_application`.

        :param loop: ``"auto"`` (uvloop when installed), ``"asyncio"`` or ``"uvloop"``; default:
            the environment variable ``KYOUKAI_LOOP``, else ``"auto"`` (see :mod:`kyoukai.loops`).
        """
        policy = loops.event_loop_policy(loop)
        if component is None:
            component = self._default_component(ip, port)
        self.component = component
        Runner(event_loop_policy=policy).run(component)

    def _default_component(self, ip: str, port: int) -> Component:
        factory = type(self).component_factory
        if factory is None:
            raise RuntimeError("Kyoukai.component_factory is not set: import kyoukai.asphalt, or pass component=")
        return factory(self, ip, port)
