"""The per-request asphalt context handed to every route."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from asphalt.core import Context, Signal
from werkzeug.wrappers import Request

from kyoukai.events import RouteInvokedEvent, RouteMatchedEvent, RouteReturnedEvent

if TYPE_CHECKING:
    from werkzeug.routing import Rule

    from kyoukai.blueprint import Blueprint
    from kyoukai.interfaces import Application
    from kyoukai.route import Route


class HTTPRequestContext(Context):
    """
    The context of one request: an asphalt :class:`~asphalt.core.Context` whose parent is the
    component's context, so resources published there are reachable from handlers.
    """

    route_matched = Signal(RouteMatchedEvent)
    route_invoked = Signal(RouteInvokedEvent)
    route_completed = Signal(RouteReturnedEvent)

    def __init__(self, parent: Context | None, request: Request) -> None:
        # asphalt 4.12 warns when the parent is passed to the constructor; set it directly.
        super().__init__()
        if parent is not None:
            self._parent = parent

        #: The :class:`~.Kyoukai` application handling this request.
        self.app: Application | None = None
        #: The :class:`werkzeug.wrappers.Request` being handled.
        self.request = request
        #: The URL parameters matched by the routing rule.
        self.params: dict[str, Any] | None = None
        #: The matched :class:`~.Route`.
        self.route: Route | None = None
        #: The :class:`~.Blueprint` of the matched route.
        self.bp: Blueprint | None = None
        #: The matched :class:`werkzeug.routing.Rule`.
        self.rule: Rule | None = None
        #: The WSGI environment of the request.
        self.environ: dict[str, Any] = request.environ
        #: The protocol object serving the connection (HTTP/1.1 or HTTP/2), if any.
        self.proto: Any = request.environ.get("kyoukai.protocol")
        #: The :class:`~kyoukai.websocket.WebSocket` of a WebSocket route's request.
        self.websocket: Any = None

    def emit(self, signal_name: str, **kwargs: Any) -> None:
        """
        Dispatch one of this context's signals, skipping the event's construction when nobody
        listens (asphalt binds signals per instance, so most requests have no listener).
        """
        bound_signals = getattr(type(self), signal_name).bound_signals
        if bound_signals.data:  # the WeakKeyDictionary's own dict: the cheapest emptiness check
            bound = bound_signals.get(self)
            if bound is not None and bound.listeners:
                bound.dispatch(ctx=self, **kwargs)

    async def send_informational(self, status: int, headers: list[tuple[str, str]]) -> None:
        """
        Send a 1xx response before the final one, e.g. ``await ctx.send_informational(103,
        [("link", "</app.css>; rel=preload")])`` for Early Hints. A no-op where the protocol
        cannot (HTTP/1.0, or no server).
        """
        sender = getattr(self.proto, "send_informational", None)
        if sender is not None:
            await sender(self.environ, status, headers)

    def url_for(
        self,
        endpoint: str,
        *,
        method: str | None = None,
        _external: bool = False,
        _scheme: str | None = None,
        **values: Any,
    ) -> str:
        """
        Build the URL of ``endpoint`` for this request: its path, or with ``_external=True`` the
        absolute URL (``https://example.com:8443/users/1``) with the scheme and host this request
        came to (after trusted proxies' ``Forwarded`` headers). See :meth:`.Blueprint.url_for`.
        """
        if self.app is None:
            raise RuntimeError(f"url_for({endpoint!r}) needs ctx.app: this context is not handling a request")
        return self.app.url_for(self.environ, endpoint, method=method, _external=_external, _scheme=_scheme, **values)
