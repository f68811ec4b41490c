"""
The application and the request context as the modules beneath them see them: routes and
events are typed with these protocols, so they need not import :mod:`kyoukai.app` or
:mod:`kyoukai.context` (which import them).
"""

from __future__ import annotations

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
