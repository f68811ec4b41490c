"""Asphalt events dispatched by Kyoukai's components and request contexts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from asphalt.core import Event

if TYPE_CHECKING:
    from werkzeug.wrappers import Response

    from kyoukai.interfaces import RequestContext


class ConnectionMadeEvent(Event):
    """A client connected; ``protocol`` is the protocol object serving it."""

    def __init__(self, source: Any, topic: str, *, protocol: Any) -> None:
        super().__init__(source, topic)
        self.protocol = protocol


class ConnectionLostEvent(ConnectionMadeEvent):
    """A client connection ended; ``protocol`` is the protocol object that served it."""


class CtxEvent(Event):
    """Base of the per-request events; ``ctx`` is the :class:`~.HTTPRequestContext`."""

    def __init__(self, source: Any, topic: str, *, ctx: RequestContext) -> None:
        super().__init__(source, topic)
        self.ctx = ctx


class RouteMatchedEvent(CtxEvent):
    """A route matched the request (``ctx.route`` is set)."""


class RouteInvokedEvent(CtxEvent):
    """The matched route is about to be invoked."""


class RouteReturnedEvent(CtxEvent):
    """The route returned; ``result`` is the response."""

    def __init__(self, source: Any, topic: str, *, ctx: RequestContext, result: Response) -> None:
        super().__init__(source, topic, ctx=ctx)
        self.result = result
