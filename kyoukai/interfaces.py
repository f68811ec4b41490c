"""
The application and the request context as the modules beneath them see them: routes and
events are typed with these protocols, so they need not import :mod:`kyoukai.app` or
:mod:`kyoukai.context` (which import them); and the application as the components and the
backends serve it, whatever its kind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from werkzeug.wrappers import Request, Response


class Application(Protocol):
    """What a request context and its routes use of the :class:`~.Kyoukai` app."""

    @property
    def response_class(self) -> type[Response]:
        """The class plain return values of handlers are wrapped in."""

    def url_for(self, environment: dict, endpoint: str, *, method: str | None = None, **kwargs: Any) -> str:
        """Build the URL of ``endpoint`` (see :meth:`.Blueprint.url_for`)."""


@runtime_checkable
class RequestContext(Protocol):
    """What routes and event listeners use of the :class:`~.HTTPRequestContext`."""

    @property
    def app(self) -> Application | None:
        """The app handling the request."""

    @property
    def request(self) -> Request:
        """The request being handled."""


class ServedApplication(Protocol):
    """
    What the components and the backends use of the application they serve: a
    :class:`~.Kyoukai` app, or an ASGI app wrapped in an :class:`~kyoukai.asgi.serve.ASGIApplication`.
    """

    #: The component serving the app, set when it starts.
    component: Any
    #: The configuration (the component's config keys are merged in when it starts).
    config: dict[str, Any]
    #: Whether an unhandled exception is answered with the traceback page.
    debug: bool

    @property
    def server_name(self) -> str | None:
        """The server name, if set."""

    @property
    def request_class(self) -> Callable[[dict[str, Any]], Any]:
        """Makes the request object handed to :meth:`process_request` from a WSGI environ."""

    def finalize(self) -> Any:
        """Make the app ready to serve, from its :attr:`config` (called when a component starts)."""

    async def process_request(self, request: Any, parent_context: Any) -> Response:
        """The response to ``request``; the backend sends it (a streamed body as it is produced)."""
