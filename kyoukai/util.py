"""Helpers for building responses."""

from __future__ import annotations

import functools
import json
from typing import Any

from werkzeug.utils import get_content_type
from werkzeug.wrappers import Response

from kyoukai.version import __version__

#: The value of the ``Server`` and ``X-Powered-By`` headers.
SERVER_TOKEN = f"Kyoukai/{__version__}"


def as_html(text: str, code: int = 200, headers: dict | None = None) -> Response:
    """A ``text/html`` response."""
    return Response(text, status=code, headers=headers, content_type="text/html; charset=utf-8")


def as_plaintext(text: str, code: int = 200, headers: dict | None = None) -> Response:
    """A ``text/plain`` response."""
    return Response(text, status=code, headers=headers, content_type="text/plain; charset=utf-8")


def as_json(data: Any, code: int = 200, headers: dict | None = None, *, json_encoder: type | None = None) -> Response:
    """An ``application/json`` response holding ``data`` serialised with :func:`json.dumps`."""
    body = json.dumps(data, cls=json_encoder)
    return Response(body, status=code, headers=headers, content_type="application/json")


def wrap_response(value: Any, response_class: type[Response] | None = None, *, status: int = 200) -> Response:
    """
    Turn a handler's return value into a response.

    - a :class:`~werkzeug.wrappers.Response` passes through;
    - ``None`` gives an empty ``204 No Content``;
    - a tuple is ``(body[, status[, headers]])``;
    - anything else is the body (``str``, ``bytes`` or an iterable of them), with ``status``.
    """
    if isinstance(value, Response):
        return value
    cls = response_class or Response
    if value is None:
        return cls(status=204)
    headers = None
    if isinstance(value, tuple):
        if not 1 <= len(value) <= 3:
            raise TypeError(f"a response tuple is (body[, status[, headers]]), got {len(value)} items")
        body = value[0]
        if len(value) > 1:
            status = value[1]
        if len(value) > 2:
            headers = value[2]
        if isinstance(body, Response):
            if len(value) > 1:
                body.status_code = status
            if headers:
                body.headers.update(headers)
            return body
    else:
        body = value
    if body is not None and not hasattr(body, "__iter__") and not hasattr(body, "__aiter__"):
        # Caught here, this is a 500 with a clear log line, not a failure half-way through sending.
        raise TypeError(f"a response body must be str, bytes or an iterable of them, not {type(body).__name__}")
    if headers:
        return cls(body, status=status, headers=headers)
    # No headers: the content type is the class's default, as werkzeug would pick it, but given
    # outright (werkzeug's own check raises and catches a KeyError on every response).
    return cls(body, status=status, content_type=_default_content_type(cls.default_mimetype))


@functools.cache
def _default_content_type(mimetype: str | None) -> str | None:
    """The ``Content-Type`` werkzeug derives from a response class's ``default_mimetype``."""
    return None if mimetype is None else get_content_type(mimetype, "utf-8")
