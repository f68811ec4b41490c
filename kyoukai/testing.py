"""Testing an app without a network: inject requests straight into the request pipeline."""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from asphalt.core import Context
from werkzeug.wrappers import Response

from kyoukai.app import Kyoukai
from kyoukai.blueprint import Blueprint
from kyoukai.wsgi import to_wsgi_environment


class TestKyoukai(Kyoukai):
    """
    A :class:`~.Kyoukai` app with helpers for tests.

    :param base_context: the parent context of the injected requests' contexts.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, *args: Any, base_context: Context | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.base_context = base_context

    @classmethod
    def wrap_existing_app(cls, app: Kyoukai, base_context: Context | None = None) -> TestKyoukai:
        """A :class:`TestKyoukai` sharing the routes and configuration of ``app``."""
        new = cls(
            app.name,
            server_name=app.server_name,
            base_context=base_context,
            request_class=app.request_class,
            response_class=app.response_class,
            context_class=app.context_class,
            **app.config,
        )
        new._root_bp = app.root
        return new

    @contextmanager
    def testing_bp(self) -> Iterator[Blueprint]:
        """Swap in a fresh, empty root blueprint for the duration of the ``with`` block."""
        old_root = self._root_bp
        self._root_bp = Blueprint(f"{self.name}-testing")
        try:
            yield self._root_bp
        finally:
            self._root_bp = old_root

    async def inject_request(
        self,
        headers: Mapping[str, str] | list[tuple[str, str]],
        url: str,
        method: str = "GET",
        body: str | bytes | None = None,
    ) -> Response:
        """Process a request built from the arguments and return the response."""
        if isinstance(body, str):
            body = body.encode("utf-8")
        stream = io.BytesIO(body or b"")
        header_list = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        if body and not any(name.lower() == "content-length" for name, _ in header_list):
            header_list.append(("Content-Length", str(len(body))))
        # The server address stands in for a missing Host header, as on a real socket.
        environ = to_wsgi_environment(header_list, method, url, "1.1", body=stream, server=("localhost", 80))
        request = self.request_class(environ)
        self.finalize()
        return await self.process_request(request, self.base_context)
