"""
The ASGI connection scope of a request, built from the WSGI environ the backends make (so the
trusted-proxy rewriting applies to ASGI apps too), and the pieces every ASGI cycle shares.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: The ``asgi`` key of every scope: ASGI 3, HTTP and WebSocket protocol version 2.4.
ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}

_HTTP_VERSIONS = {"HTTP/1.1": "1.1", "HTTP/2": "2", "HTTP/1.0": "1.0"}


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """What every request of an ASGI app needs of the app's settings (made when it starts)."""

    #: The ``root_path`` of every scope (config key ``root_path``).
    root_path: str = ""
    #: Fields added to every response that lacks them (``Server``, ``X-Powered-By``).
    server_headers: tuple[tuple[str, str], ...] = ()
    #: The largest request body handed to the app (``max_body_size``), ``None`` for no limit.
    max_body_size: int | None = None
    #: Seconds the app may run on after its client went away before it is cancelled.
    disconnect_timeout: float = 5.0
    #: Answer an app's exception with the traceback page (config key ``debug``).
    debug: bool = False


class Disconnected(ConnectionError):
    """
    Raised by ``send`` when the client is gone (ASGI 2.4: a subclass of :class:`OSError`), or
    when the server answered the request itself (an oversized or stalled request body).
    """


#: Environ keys and the header names they stand for (``None``: not a header field), filled as
#: they are met; bounded, as the keys of header fields are the client's to choose.
_HEADER_NAMES: dict[str, bytes | None] = {}
_HEADER_NAMES_LIMIT = 1000


def _header_name(key: str) -> bytes | None:
    """The header name that the environ key ``key`` stands for, lowercase; ``None`` for no header field."""
    if key[:5] == "HTTP_":
        name: bytes | None = key[5:].lower().replace("_", "-").encode("latin-1")
    elif key == "CONTENT_TYPE" or key == "CONTENT_LENGTH":
        name = key.lower().replace("_", "-").encode("latin-1")
    else:
        name = None
    if len(_HEADER_NAMES) < _HEADER_NAMES_LIMIT:
        _HEADER_NAMES[key] = name
    return name


def request_headers(environ: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    """The request's header fields as ASGI wants them: lowercase names, latin-1 bytes."""
    names = _HEADER_NAMES
    headers = []
    for key, value in environ.items():
        try:
            name = names[key]
        except KeyError:
            name = _header_name(key)
        if name is not None:
            headers.append((name, value.encode("latin-1")))
    return headers


def connection_scope(environ: dict[str, Any], kind: str, root_path: str, state: dict[str, Any]) -> dict[str, Any]:
    """
    The scope of the request of ``environ`` for an ASGI app (``kind``: ``"http"`` or
    ``"websocket"``), without its ``extensions``.

    ``path`` and ``raw_path`` include ``root_path``, as Starlette and uvicorn expect; ``path`` is
    percent-decoded and read as UTF-8. ``server`` is the address of the listening socket.
    """
    scheme = environ["wsgi.url_scheme"]
    path_info = environ["PATH_INFO"]
    raw_path = environ.get("RAW_URI", path_info).partition("?")[0].encode("latin-1")
    if not path_info.isascii():
        path_info = path_info.encode("latin-1").decode("utf-8", "replace")
    address = environ.get("REMOTE_ADDR")
    port = environ.get("REMOTE_PORT", "")
    server = getattr(environ.get("kyoukai.protocol"), "server_address", None)
    scope = {
        "type": kind,
        "asgi": ASGI_VERSION,
        "http_version": _HTTP_VERSIONS.get(environ["SERVER_PROTOCOL"], "1.1"),
        "scheme": scheme if kind == "http" else ("wss" if scheme == "https" else "ws"),
        "path": root_path + path_info,
        "raw_path": root_path.encode("utf-8") + raw_path if root_path else raw_path,
        "query_string": environ.get("QUERY_STRING", "").encode("latin-1"),
        "root_path": root_path,
        "headers": request_headers(environ),
        "client": (address, int(port) if port.isdigit() else 0) if address else None,
        "server": tuple(server[:2]) if isinstance(server, tuple) else None,
        "state": dict(state),
    }
    if kind == "http":
        scope["method"] = environ["REQUEST_METHOD"]
    return scope
