"""Helpers for building responses."""

from __future__ import annotations

import collections.abc
import functools
import json
from typing import Any

from werkzeug.datastructures import Headers
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


def as_json(
    data: Any,
    code: int = 200,
    headers: dict | None = None,
    *,
    json_encoder: type[json.JSONEncoder] | None = None,
    **json_kwargs: Any,
) -> Response:
    """
    An ``application/json`` response holding ``data`` serialised with :func:`json.dumps`;
    ``json_kwargs`` go to it (e.g. ``indent=2``, ``sort_keys=True``).
    """
    body = json.dumps(data, cls=json_encoder, **json_kwargs)
    return Response(body, status=code, headers=headers, content_type="application/json")


class InvalidReturnValue(TypeError):
    """A handler (or hook) returned something that cannot be made into a response."""


def wrap_response(value: Any, response_class: type[Response] | None = None, *, status: int = 200) -> Response:
    """
    Turn a handler's return value into a response.

    - a :class:`~werkzeug.wrappers.Response` passes through;
    - ``None`` gives an empty ``204 No Content``;
    - a ``dict`` or a ``list`` is sent as JSON (``application/json``);
    - a tuple is ``(body[, status[, headers]])``, the body being any of these;
    - ``str`` and ``bytes`` are the body, and so are iterators, generators and async
      generators of them (streamed).

    :raises InvalidReturnValue: for anything else (an ``int``, a ``set``...), naming its type.
    """
    if isinstance(value, Response):
        return value
    cls = response_class or Response
    if value is None:
        return cls(status=204)
    headers = None
    if isinstance(value, tuple):
        if not 1 <= len(value) <= 3:
            raise InvalidReturnValue(f"a tuple of {len(value)} items; a response tuple is (body[, status[, headers]])")
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
    if isinstance(body, (dict, list)):
        given = Headers(headers) if headers else None
        content_type = None if given is not None and "content-type" in given else "application/json"
        try:
            text = json.dumps(body)
        except (TypeError, ValueError) as e:
            raise InvalidReturnValue(f"a {type(body).__name__} that cannot be sent as JSON ({e})") from e
        return cls(text, status=status, headers=given, content_type=content_type)
    if not _is_body(body):
        raise InvalidReturnValue(
            f"a value of type {type(body).__name__!r}, which cannot be a response: return str or bytes, "
            "a dict or a list (sent as JSON), an iterator or async iterator of str or bytes (streamed), "
            "None (204), a werkzeug Response, or a tuple (body, status[, headers])"
        )
    if headers:
        return cls(body, status=status, headers=headers)
    # No headers: the content type is the class's default, as werkzeug would pick it, but given
    # outright (werkzeug's own check raises and catches a KeyError on every response).
    return cls(body, status=status, content_type=_default_content_type(cls.default_mimetype))


#: What a handler may return as a body besides JSON: text, bytes, and what is streamed.
_BODY_TYPES = (str, bytes, bytearray, collections.abc.Iterator, collections.abc.AsyncIterable)


def _is_body(value: Any) -> bool:
    return value is None or isinstance(value, _BODY_TYPES)


@functools.cache
def _default_content_type(mimetype: str | None) -> str | None:
    """The ``Content-Type`` werkzeug derives from a response class's ``default_mimetype``."""
    return None if mimetype is None else get_content_type(mimetype, "utf-8")
