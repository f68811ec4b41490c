"""
The access log: one line per request on the ``kyoukai.access`` logger, at ``INFO``.

The line is built from a format string (config key ``access_log_format``) with named fields,
:meth:`str.format` style. The default is the Common Log Format followed by the duration::

    {client} - {user} [{time}] "{method} {path} {protocol}" {status} {bytes} {duration:.6f}

Fields: ``client`` (the client's address: the real one behind a trusted proxy, see
:mod:`kyoukai.proxy`), ``client_port``, ``user`` (``REMOTE_USER``), ``time`` (CLF time stamp),
``time_iso`` (ISO 8601), ``method``, ``path`` (path and query as requested), ``query``,
``protocol`` (``HTTP/1.1``, ``HTTP/2``), ``scheme``, ``host``, ``status``, ``bytes`` (body
length; ``-`` when streamed or empty), ``duration`` (seconds, a float), ``duration_ms``
(milliseconds, a float), ``referer``, ``user_agent``, and ``headers[Name]`` for any request
header. A missing value is ``-``.

Nothing is formatted unless ``kyoukai.access`` is enabled for ``INFO``.
"""

from __future__ import annotations

import logging
import string
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from werkzeug.wrappers import Request, Response

from kyoukai.wsgi import PerSecond

#: The config key holding the format.
CONFIG_KEY = "access_log_format"
#: Common Log Format, plus the seconds the app took.
DEFAULT_FORMAT = '{client} - {user} [{time}] "{method} {path} {protocol}" {status} {bytes} {duration:.6f}'
#: Environ keys set by :meth:`Kyoukai.process_request <kyoukai.app.Kyoukai.process_request>`:
#: when the request reached the app (:func:`time.perf_counter`), and its response.
START_KEY = "kyoukai.request_start"
RESPONSE_KEY = "kyoukai.response"

logger = logging.getLogger("kyoukai.access")

_NO_BODY_STATUSES = frozenset({204, 304})


class _Headers:
    """The request headers for ``{headers[Name]}``: ``-`` for a missing one."""

    __slots__ = ("_environ",)

    def __init__(self, environ: dict[str, Any]) -> None:
        self._environ = environ

    def __getitem__(self, name: str) -> str:
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        return self._environ.get(key) or "-"


#: The local time in CLF (``10/Oct/2000:13:55:36 +0200``).
_clf_time = PerSecond(lambda now: datetime.fromtimestamp(now).astimezone().strftime("%d/%b/%Y:%H:%M:%S %z"))


def _bytes(environ: dict[str, Any], status: int) -> int | str:
    response: Response | None = environ.get(RESPONSE_KEY)
    if response is None or environ.get("REQUEST_METHOD") == "HEAD" or status < 200 or status in _NO_BODY_STATUSES:
        return "-"
    length = response.content_length
    return length if length else "-"


def _duration(environ: dict[str, Any]) -> float:
    start = environ.get(START_KEY)
    return time.perf_counter() - start if start is not None else 0.0


def _path(environ: dict[str, Any]) -> str:
    raw = environ.get("RAW_URI")
    if raw:
        return raw
    query = environ.get("QUERY_STRING")
    return environ.get("PATH_INFO", "") + ("?" + query if query else "")


#: How each field is computed from the environ and the status.
FIELDS: dict[str, Callable[[dict[str, Any], int], Any]] = {
    "client": lambda e, s: e.get("REMOTE_ADDR") or "-",
    "client_port": lambda e, s: e.get("REMOTE_PORT") or "-",
    "user": lambda e, s: e.get("REMOTE_USER") or "-",
    "time": lambda e, s: _clf_time(),
    "time_iso": lambda e, s: datetime.now().astimezone().isoformat(timespec="milliseconds"),
    # (An HTTP/2 extended CONNECT is routed as a GET: the method sent is logged.)
    "method": lambda e, s: e.get("kyoukai.method") or e.get("REQUEST_METHOD") or "-",
    "path": lambda e, s: _path(e),
    "query": lambda e, s: e.get("QUERY_STRING") or "-",
    "protocol": lambda e, s: e.get("SERVER_PROTOCOL") or "-",
    "scheme": lambda e, s: e.get("wsgi.url_scheme") or "-",
    "host": lambda e, s: e.get("HTTP_HOST") or "-",
    "status": lambda e, s: s,
    "bytes": _bytes,
    "duration": lambda e, s: _duration(e),
    "duration_ms": lambda e, s: _duration(e) * 1000.0,
    "referer": lambda e, s: e.get("HTTP_REFERER") or "-",
    "user_agent": lambda e, s: e.get("HTTP_USER_AGENT") or "-",
    "headers": lambda e, s: _Headers(e),
}


class AccessLog:
    """
    Formats and logs access lines.

    :param fmt: the format (see the module documentation).
    :raises ValueError: naming ``access_log_format`` and the unknown field or bad format spec.
    """

    def __init__(self, fmt: str = DEFAULT_FORMAT) -> None:
        if not isinstance(fmt, str):
            raise ValueError(f"config key {CONFIG_KEY!r} must be a string, not {fmt!r}")
        self.format = fmt
        used: dict[str, Callable[[dict[str, Any], int], Any]] = {}
        try:
            for _, field, _, _ in string.Formatter().parse(fmt):
                if field is None:
                    continue
                name = field.split(".", 1)[0].split("[", 1)[0]
                if name not in FIELDS:
                    raise ValueError(
                        f"config key {CONFIG_KEY!r}: unknown field {{{name}}} in {fmt!r}; "
                        f"the fields are {', '.join(sorted(FIELDS))}"
                    )
                used[name] = FIELDS[name]
            #: The fields the format uses: only these are computed per request.
            self.fields = used
            sample = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "SERVER_PROTOCOL": "HTTP/1.1"}
            fmt.format_map(self._values(sample, 200))
        except (ValueError, IndexError, KeyError) as e:
            if str(e).startswith(f"config key {CONFIG_KEY!r}"):
                raise
            raise ValueError(f"config key {CONFIG_KEY!r}: {fmt!r} is not a valid format: {e}") from None

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> AccessLog:
        """The access log of the ``access_log_format`` key of ``config`` (the default if absent)."""
        return cls(config.get(CONFIG_KEY) or DEFAULT_FORMAT)

    def _values(self, environ: dict[str, Any], status: int) -> dict[str, Any]:
        return {name: compute(environ, status) for name, compute in self.fields.items()}

    def _render(self, environ: dict[str, Any], status: int) -> str:
        return self.format.format_map(self._values(environ, status))

    def log(self, request: Request, status: int) -> None:
        """Log the line for ``request`` answered with ``status``, if ``kyoukai.access`` logs ``INFO``."""
        if logger.isEnabledFor(logging.INFO):
            logger.info(self._render(request.environ, status))
