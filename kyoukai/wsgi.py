"""
The bridge between the wire and werkzeug, shared by both backends: building the WSGI environ of
a request, and turning a werkzeug response into a status, headers and body chunks.
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, NamedTuple
from urllib.parse import unquote_to_bytes

from werkzeug.wrappers import Response

from kyoukai.protocol.fields import InvalidFieldError, checked_names

_REASONS = {s.value: s.phrase for s in HTTPStatus}
_NO_BODY_STATUSES = frozenset({204, 304})
_JOINED_WITH_SEMICOLON = frozenset({"HTTP_COOKIE"})
_ERRORS_STREAM = sys.stderr


def reason_phrase(status: int) -> str:
    """The standard reason phrase of ``status`` (never empty: some clients reject that)."""
    return _REASONS.get(status, "Unknown")


class PerSecond:
    """The current time formatted by ``format_time(seconds)``, formatted at most once a second."""

    def __init__(self, format_time: Callable[[int], str]) -> None:
        self._format = format_time
        self._second = -1
        self._value = ""

    def __call__(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = self._format(now)
        return self._value


#: ``http_date()`` returns the current time as an HTTP ``Date`` value.
http_date = PerSecond(lambda now: formatdate(now, usegmt=True))


def to_wsgi_environment(
    headers: Iterable[tuple[str | bytes, str]] | Mapping[str, str],
    method: str,
    path: str,
    http_version: str,
    body: Any = None,
    *,
    scheme: str = "http",
    server: tuple[str, int] | None = None,
    peer: tuple[str, int] | None = None,
    protocol: Any = None,
    authority: str | None = None,
) -> dict[str, Any]:
    """
    Build a PEP 3333 environ.

    :param headers: header ``(name, value)`` pairs (or a mapping), names as text or latin-1
        bytes; repeated headers are joined
        with ``, `` (``cookie`` with ``; ``). Names holding ``_`` are dropped: they would be
        indistinguishable from ``-`` once in the environ.
    :param method: the request method.
    :param path: the request target (``/path?query`` or an absolute URL).
    :param http_version: ``"1.0"``, ``"1.1"`` or ``"2"``.
    :param body: the ``wsgi.input`` object (an empty stream if ``None``).
    :param scheme: ``"http"`` or ``"https"``.
    :param server: the local ``(host, port)`` of the socket.
    :param peer: the client's ``(host, port)``.
    :param protocol: the protocol object serving the request (``ctx.proto``).
    :param authority: the HTTP/2 ``:authority``; used as the ``Host`` when present.
    """
    if "://" in path and not path.startswith("/"):
        _, _, rest = path.partition("://")
        end = len(rest)
        for delimiter in "/?":
            found = rest.find(delimiter)
            if 0 <= found < end:
                end = found
        if authority is None:
            authority = rest[:end]
        path = rest[end:]
        if not path.startswith("/"):
            path = "/" + path
    environ = _base_environ(method, path, http_version, body, scheme, server, peer, protocol)
    items = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in items:
        key = _HEADER_KEYS.get(name)
        if key is None:
            key = _header_key(name)
            if key is None:
                continue
        if key in _NOT_JOINED:
            environ[key] = value
            continue
        existing = environ.get(key)
        if existing is None:
            environ[key] = value
        else:
            environ[key] = existing + ("; " if key in _JOINED_WITH_SEMICOLON else ", ") + value
    return _finish_environ(environ, authority, scheme)


#: Header names (as received, str or bytes) and their environ keys, for the names seen most:
#: bounded, since clients choose the names.
_HEADER_KEYS: dict[str | bytes, str] = {}
_HEADER_KEYS_SIZE = 512
#: Keys PEP 3333 keeps outside ``HTTP_*``: a repeated field replaces, as before.
_NOT_JOINED = frozenset({"CONTENT_TYPE", "CONTENT_LENGTH"})


def _header_key(name: str | bytes) -> str | None:
    """The environ key of a header name (``None``: dropped, for holding ``_``), remembered."""
    text = name.decode("latin-1") if isinstance(name, bytes) else name
    if "_" in text:
        # Indistinguishable from "-" once in the environ.
        return None
    key = text.upper().replace("-", "_")
    if key not in _NOT_JOINED:
        key = "HTTP_" + key
    if len(_HEADER_KEYS) < _HEADER_KEYS_SIZE:
        _HEADER_KEYS[name] = key
    return key


def _base_environ(
    method: str,
    path: str,
    http_version: str,
    body: Any,
    scheme: str,
    server: tuple[str, int] | None,
    peer: tuple[str, int] | None,
    protocol: Any,
) -> dict[str, Any]:
    """The environ of a request (its target in origin form) without its header fields."""
    raw_path, _, query = path.partition("?")
    server_host, server_port = (server[0], server[1]) if server else ("", 0)
    return {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(raw_path).decode("latin-1"),
        "QUERY_STRING": query,
        "RAW_URI": path,
        "REQUEST_URI": path,
        "SERVER_NAME": str(server_host),
        "SERVER_PORT": str(server_port),
        "SERVER_PROTOCOL": f"HTTP/{http_version}",
        "REMOTE_ADDR": peer[0] if peer else "",
        "REMOTE_PORT": str(peer[1]) if peer else "",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.input": body if body is not None else io.BytesIO(),
        "wsgi.input_terminated": True,
        "wsgi.errors": _ERRORS_STREAM,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "kyoukai.protocol": protocol,
    }


def _finish_environ(environ: dict[str, Any], authority: str | None, scheme: str) -> dict[str, Any]:
    if authority is not None:
        environ["HTTP_HOST"] = authority
    host = environ.get("HTTP_HOST")
    if host:
        name, port = _split_host(host, scheme)
        environ["SERVER_NAME"] = name
        environ["SERVER_PORT"] = port
    return environ


#: Environ keys of an HTTP/2 extended CONNECT (see :func:`environ_from_h2`): the method sent
#: (``CONNECT``, where ``REQUEST_METHOD`` says ``GET``) and the ``:protocol``.
H2_METHOD_KEY = "kyoukai.method"
H2_PROTOCOL_KEY = "kyoukai.websocket.protocol"


def environ_from_h2(
    headers: Iterable[tuple[bytes, bytes]],
    body: Any,
    scheme: str,
    server: tuple[str, int] | None,
    peer: tuple[str, int] | None,
    protocol: Any,
) -> dict[str, Any]:
    """
    The environ of an HTTP/2 request head (pseudo-headers first, as h2 gives them).

    An extended CONNECT (RFC 8441) is described as the HTTP/1.1 handshake it stands for, so
    that it is routed to the WebSocket rule of its path: ``GET`` with ``Upgrade`` (the
    ``:protocol``) and ``Connection: upgrade``. The method sent is kept under
    :data:`H2_METHOD_KEY` and the protocol under :data:`H2_PROTOCOL_KEY`.
    """
    method = path = authority = ""
    tunnel = None
    # Names stay bytes: to_wsgi_environment remembers the environ key of each.
    regular: list[tuple[str | bytes, str]] = []
    for name, value in headers:
        if name[:1] == b":":
            if name == b":method":
                method = value.decode("ascii")
            elif name == b":path":
                path = value.decode("latin-1")
            elif name == b":authority":
                authority = value.decode("latin-1")
            elif name == b":scheme":
                scheme = value.decode("ascii")
            elif name == b":protocol":
                tunnel = value.decode("latin-1")
        else:
            regular.append((name, value.decode("latin-1")))
    if tunnel is not None:
        # (HTTP/2 forbids both fields in a request, so these are the only ones.)
        regular += [(b"upgrade", tunnel), (b"connection", "upgrade")]
    environ = to_wsgi_environment(
        regular,
        "GET" if tunnel is not None else method,
        path,
        "2",
        body,
        scheme=scheme,
        server=server,
        peer=peer,
        protocol=protocol,
        authority=authority or None,
    )
    if tunnel is not None:
        environ[H2_METHOD_KEY] = method
        environ[H2_PROTOCOL_KEY] = tunnel
    return environ


def h2_headers_of_upgrade(environ: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    """The HTTP/2 header block of the HTTP/1.1 request (``environ``) that asked for ``Upgrade: h2c``."""
    headers = [
        (b":method", environ["REQUEST_METHOD"].encode("latin-1")),
        (b":scheme", b"http"),
        (b":authority", environ.get("HTTP_HOST", "").encode("latin-1")),
        (b":path", environ["RAW_URI"].encode("latin-1")),
    ]
    skip = {"HTTP_CONNECTION", "HTTP_UPGRADE", "HTTP_HTTP2_SETTINGS", "HTTP_HOST"}
    for key, value in environ.items():
        if key.startswith("HTTP_") and key not in skip:
            headers.append((key[5:].lower().replace("_", "-").encode("latin-1"), value.encode("latin-1")))
        elif key == "CONTENT_TYPE" or key == "CONTENT_LENGTH":
            # (Kept outside HTTP_* by PEP 3333.)
            headers.append((key.lower().replace("_", "-").encode("latin-1"), value.encode("latin-1")))
    return headers


def _split_host(host: str, scheme: str) -> tuple[str, str]:
    """Split a ``Host`` value into name and port, IPv6 literals included."""
    if host.startswith("["):
        end = host.find("]")
        if end > 0:
            rest = host[end + 1 :]
            return host[1:end], rest[1:] if rest.startswith(":") else _default_port(scheme)
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit():
        return name, port
    return host, _default_port(scheme)


def _default_port(scheme: str) -> str:
    return "443" if scheme == "https" else "80"


class ResponseParts(NamedTuple):
    """A response ready for the wire."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    #: The whole body, when it is known before sending (``b""`` for HEAD and bodiless statuses).
    body: bytes | None
    #: Otherwise the body as it is produced.
    stream: AsyncGenerator[bytes, None] | None


def prepare_response(response: Response, environ: dict[str, Any]) -> ResponseParts:
    """
    Split a werkzeug response into status, headers and either a complete body (with
    ``Content-Length``) or a stream of chunks (generators and async generators are sent as they
    produce, never turned into a string). ``Date`` is added when the response has none.

    :raises InvalidFieldError: when a header name is not a token or a value holds CR, LF or
        NUL (the response is closed; nothing of it may be sent).
    """
    status = response.status_code
    headers = response.headers.to_wsgi_list()
    try:
        names = _checked_names(headers)
    except InvalidFieldError:
        response.close()
        raise
    if "\ndate\n" not in names:
        headers.append(("Date", http_date()))
    no_body = environ.get("REQUEST_METHOD") == "HEAD" or status in _NO_BODY_STATUSES or status < 200
    payload = response.response
    if isinstance(payload, (list, tuple)):
        if len(payload) == 1 and isinstance(payload[0], bytes):
            body = payload[0]
        else:
            body = b"".join(response.iter_encoded())
        if status not in _NO_BODY_STATUSES and status >= 200 and "\ncontent-length\n" not in names:
            headers.append(("Content-Length", str(len(body))))
        return ResponseParts(status, reason_phrase(status), headers, b"" if no_body else body, None)
    if no_body:
        response.close()
        return ResponseParts(status, reason_phrase(status), headers, b"", None)
    return ResponseParts(status, reason_phrase(status), headers, None, iter_response_body(response))


#: Response header lists already checked, and their names (see :func:`checked_names`): most
#: responses of an app repeat a few lists. Bounded, since values may come from requests.
_CHECKED: dict[tuple[tuple[str, str], ...], str] = {}
_CHECKED_SIZE = 1024


def _checked_names(headers: list[tuple[str, str]]) -> str:
    """:func:`checked_names`, remembered for lists of fields that passed unchanged."""
    try:
        key = tuple(headers)
        names = _CHECKED.get(key)
    except TypeError:  # an unhashable value: checked_names names it
        return checked_names(headers)
    if names is None:
        names = checked_names(headers)
        if len(headers) == len(key) and all(a is b for a, b in zip(headers, key, strict=True)):
            # (Only fields that needed no stripping: the check may rewrite the list.)
            if len(_CHECKED) >= _CHECKED_SIZE:
                _CHECKED.clear()
            _CHECKED[key] = names
    return names


#: Environ key under which :meth:`Kyoukai.process_request <kyoukai.app.Kyoukai.process_request>`
#: leaves ``(response, parts)``: the response it checked and prepared, so that one that cannot be
#: sent is a 500 in the app (and its access log line), not later in the backend.
PREPARED_KEY = "kyoukai.prepared"


def prepared_response(response: Response, environ: dict[str, Any]) -> ResponseParts:
    """The parts the app already prepared for ``response``, else :func:`prepare_response`'s."""
    prepared = environ.pop(PREPARED_KEY, None)
    if prepared is not None and prepared[0] is response:
        return prepared[1]
    return prepare_response(response, environ)


async def iter_response_body(response: Response) -> AsyncGenerator[bytes, None]:
    """Yield the body chunks of a streaming response (sync or async iterable), then close it."""
    payload = response.response
    charset = "utf-8"
    try:
        if hasattr(payload, "__aiter__"):
            async for chunk in payload:
                if not isinstance(chunk, bytes):
                    # str is encoded; a bytearray is copied, as the generator may reuse it
                    # before the backend has written it.
                    chunk = chunk.encode(charset) if isinstance(chunk, str) else bytes(chunk)
                if chunk:
                    yield chunk
        else:
            for chunk in payload:
                if not isinstance(chunk, bytes):
                    chunk = chunk.encode(charset) if isinstance(chunk, str) else bytes(chunk)
                if chunk:
                    yield chunk
    finally:
        aclose = getattr(payload, "aclose", None)
        if aclose is not None:
            await aclose()
        response.close()


def format_head(status: int, reason: str, headers: Iterable[tuple[str, str]], http_version: str = "1.1") -> bytes:
    """The HTTP/1.x status line and header block, ending with the blank line."""
    lines = [f"HTTP/{http_version} {status} {reason}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")


def get_formatted_response(response: Response, environ: dict[str, Any]) -> bytes:
    """
    The HTTP/1.x bytes of a complete response: status line, the response's headers in order,
    a blank line and the body (a streaming body is collected).

    :raises InvalidFieldError: as :func:`prepare_response`.
    """
    version = environ.get("SERVER_PROTOCOL", "HTTP/1.1").partition("/")[2] or "1.1"
    if version not in ("1.0", "1.1"):
        version = "1.1"
    status = response.status_code
    headers = response.headers.to_wsgi_list()
    names = checked_names(headers)
    if environ.get("REQUEST_METHOD") == "HEAD" or status in _NO_BODY_STATUSES or status < 200:
        body = b""
    else:
        body = b"".join(response.iter_encoded())
        if "\ncontent-length\n" not in names:
            headers.append(("Content-Length", str(len(body))))
    return format_head(status, reason_phrase(status), headers, version) + body
