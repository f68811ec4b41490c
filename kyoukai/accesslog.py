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

What a line costs, and what logging still does with it:

- The format is compiled once into one function that computes only the fields it uses.
- A line is written before :meth:`AccessLog.log` returns, so before its response is sent:
  nothing is held back, and no way of stopping the process can lose a line.
- Its record, when one is made, is what the logger's ``makeRecord`` gives (a custom record
  factory or logger class makes it), handled by :meth:`logging.Logger.handle`: the filters of
  ``kyoukai.access``, then the handlers of it and of its ancestors while ``propagate`` is
  true, each with its level and filters. Its ``pathname``, ``lineno`` and ``funcName`` are
  those of :meth:`AccessLog.log` (the caller is not looked up on the stack).
- No record is made when no filter is set on ``kyoukai.access`` or on a handler that takes
  the line, and each such handler is a :class:`logging.StreamHandler` or
  :class:`logging.FileHandler` (not a subclass that changes how a record is filtered,
  handled, formatted, emitted or flushed) with logging's own :class:`logging.Formatter` (not a
  subclass) whose format puts only constant text around the message (``logging.BASIC_FORMAT``,
  ``%(levelname)s %(name)s: %(message)s``..., not ``%(asctime)s``: that is found by
  formatting probe records once per thread and formatter; a format naming the thread keeps
  the name it had then). Then that text is written
  to each handler's stream under its lock, and flushed, as its ``emit`` would.
"""

from __future__ import annotations

import logging
import os
import re
import string
import threading
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

Render = Callable[[dict[str, Any], int], str]


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
    # What ``response.content_length`` gives, in one pass over the fields (half the time of
    # ``headers.get(..., type=int)``, on every line).
    for name, value in response.headers:
        if len(name) == 14 and name.lower() == "content-length":
            try:
                return int(value) or "-"
            except (ValueError, TypeError):
                return "-"
    return "-"


def _duration(environ: dict[str, Any], status: int) -> float:
    start = environ.get(START_KEY)
    return time.perf_counter() - start if start is not None else 0.0


def _path(environ: dict[str, Any], status: int) -> str:
    raw = environ.get("RAW_URI")
    if raw:
        return raw
    query = environ.get("QUERY_STRING")
    return environ.get("PATH_INFO", "") + ("?" + query if query else "")


#: The fields that are the first non-empty value among some environ keys (else ``-``).
_ENVIRON_FIELDS: dict[str, tuple[str, ...]] = {
    "client": ("REMOTE_ADDR",),
    "client_port": ("REMOTE_PORT",),
    "user": ("REMOTE_USER",),
    # (An HTTP/2 extended CONNECT is routed as a GET: the method sent is logged.)
    "method": ("kyoukai.method", "REQUEST_METHOD"),
    "query": ("QUERY_STRING",),
    "protocol": ("SERVER_PROTOCOL",),
    "scheme": ("wsgi.url_scheme",),
    "host": ("HTTP_HOST",),
    "referer": ("HTTP_REFERER",),
    "user_agent": ("HTTP_USER_AGENT",),
}


def _environ_field(keys: tuple[str, ...]) -> Callable[[dict[str, Any], int], Any]:
    def field(environ: dict[str, Any], status: int) -> Any:
        for key in keys:
            value = environ.get(key)
            if value:
                return value
        return "-"

    return field


#: How each field is computed from the environ and the status.
FIELDS: dict[str, Callable[[dict[str, Any], int], Any]] = {
    **{name: _environ_field(keys) for name, keys in _ENVIRON_FIELDS.items()},
    "time": lambda e, s: _clf_time(),
    "time_iso": lambda e, s: datetime.now().astimezone().isoformat(timespec="milliseconds"),
    "path": _path,
    "status": lambda e, s: s,
    "bytes": _bytes,
    "duration": _duration,
    "duration_ms": lambda e, s: _duration(e, s) * 1000.0,
    "headers": lambda e, s: _Headers(e),
}


def _compile(fmt: str) -> Render | None:
    """
    ``fmt`` (already validated) as one function returning the line from an f-string, or
    ``None`` for what it does not cover (a nested field in a format spec, an attribute, a
    numeric index): those formats are rendered by :meth:`str.format_map`.
    """
    # The source is a run of adjacent f-string literals, one per piece of the format: the
    # literal text as repr() writes it (braces doubled), and for each field an expression
    # made of generated names. The commonest fields are computed in the f-string itself, the
    # others by a call to their FIELDS entry. A header name, and a format spec that is not
    # plainly safe to write in the source, are values in the function's namespace.
    namespace: dict[str, Any] = {"clf_time": _clf_time.__call__}
    pieces = []
    for i, (literal, field, spec, conversion) in enumerate(string.Formatter().parse(fmt)):
        if literal:
            pieces.append("f" + repr(literal.replace("{", "{{").replace("}", "}}")))
        if field is None:
            continue
        if "{" in (spec or "") or "." in field or conversion not in (None, "r", "s", "a"):
            return None
        name, bracket, key = field.partition("[")
        if name in _ENVIRON_FIELDS:
            expression = "(" + " or ".join(f"e.get({key!r})" for key in _ENVIRON_FIELDS[name]) + " or '-')"
        elif name == "status":
            expression = "s"
        elif name == "time":
            expression = "clf_time()"
        else:
            namespace[f"f{i}"] = FIELDS[name]
            expression = f"f{i}(e, s)"
        if bracket:
            key = key.removesuffix("]")
            if not key or "[" in key or "]" in key or key.isdigit() or not field.endswith("]"):
                return None
            namespace[f"k{i}"] = key
            expression += f"[k{i}]"
        if conversion:
            expression += f"!{conversion}"
        if spec and _PLAIN_SPEC.fullmatch(spec):
            expression += f":{spec}"
        elif spec:
            namespace[f"s{i}"] = spec
            expression += f":{{s{i}}}"
        pieces.append(f'f"{{{expression}}}"')
    exec(f"def render(e, s):\n    return {' '.join(pieces) or repr('')}\n", namespace)
    render: Render = namespace["render"]
    return render


#: A format spec written as it is into the compiled f-string.
_PLAIN_SPEC = re.compile(r"[\w .,%<>=^+#-]*")


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
            self._format_map(sample, 200)
        except (ValueError, IndexError, KeyError) as e:
            if str(e).startswith(f"config key {CONFIG_KEY!r}"):
                raise
            raise ValueError(f"config key {CONFIG_KEY!r}: {fmt!r} is not a valid format: {e}") from None
        self._render: Render = _compile(fmt) or self._format_map

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> AccessLog:
        """The access log of the ``access_log_format`` key of ``config`` (the default if absent)."""
        return cls(config.get(CONFIG_KEY) or DEFAULT_FORMAT)

    def _format_map(self, environ: dict[str, Any], status: int) -> str:
        return self.format.format_map({name: compute(environ, status) for name, compute in self.fields.items()})

    def log(self, request: Request, status: int) -> None:
        """Log the line for ``request`` answered with ``status``, if ``kyoukai.access`` logs ``INFO``."""
        if logger.isEnabledFor(logging.INFO):
            _emit(self._render(request.environ, status))


#: The records' ``lineno``: where :meth:`AccessLog.log` starts.
_LOG_LINE = AccessLog.log.__code__.co_firstlineno

# logging's own methods, which the cheap path below stands in for: a logger, handler or
# formatter whose class (or a patch of logging) changes one of them is left to do its work.
_MAKE_RECORD = logging.Logger.makeRecord
_LOGGER_HANDLE = logging.Logger.handle
_CALL_HANDLERS = logging.Logger.callHandlers
_HANDLE = logging.Handler.handle
_ACQUIRE = logging.Handler.acquire
_RELEASE = logging.Handler.release
_FILTER = logging.Filterer.filter
_FORMAT = logging.Handler.format
_STREAM_EMIT = logging.StreamHandler.emit
_STREAM_FLUSH = logging.StreamHandler.flush
_FILE_EMIT = logging.FileHandler.emit
_FORMATTER_METHODS = ("format", "formatMessage", "usesTime", "formatTime", "formatException", "formatStack")
_STOCK = all(
    getattr(method, "__module__", None) == "logging"
    for method in (
        _MAKE_RECORD,
        _LOGGER_HANDLE,
        _CALL_HANDLERS,
        _HANDLE,
        _ACQUIRE,
        _RELEASE,
        _FILTER,
        _FORMAT,
        _STREAM_EMIT,
        _STREAM_FLUSH,
        _FILE_EMIT,
        *(getattr(logging.Formatter, name) for name in _FORMATTER_METHODS),
    )
)

#: Per thread (a format may name the thread): ``frames``, the text each handler writes around
#: a message (see :func:`_frame`).
_per_thread = threading.local()
os.register_at_fork(after_in_child=lambda: _per_thread.__dict__.clear())
_TASK_NAMES = "taskName" in vars(logging.LogRecord(logger.name, logging.INFO, __file__, 0, "", (), None))
#: How many handlers' frames a thread keeps.
_MAX_FRAMES = 32
#: Probe messages, times and task names for :func:`_frame`.
_PROBES = (
    ("", 1_000_000_000.125, "probe-1"),
    ("a'\"\\é\n\t%s{}$x", 2_000_000_000.5, "probe-2"),
    ("Zq", 1_234_567_890.875, None),
    # Longer than any precision a format could cut the message to (``%(message).20s``).
    ("x" * 65_536, 1_500_000_000.25, "probe-4"),
)


def _plain_logger() -> bool:
    """Whether ``kyoukai.access`` makes and handles records with logging's own code."""
    kind = type(logger)
    return (
        _STOCK
        and kind.callHandlers is _CALL_HANDLERS
        and kind.handle is _LOGGER_HANDLE
        and kind.makeRecord is _MAKE_RECORD
        and logging.getLogRecordFactory() is logging.LogRecord
    )


def _emit(message: str) -> None:
    """
    Log the line ``message`` (``kyoukai.access`` is enabled for ``INFO``), before returning.
    When every handler that takes it is a console or file handler that would write a constant
    text around the message (see :func:`_frame`) and nothing could tell whether a record was
    made for it (no filter), that text is written to each handler's stream, under the
    handler's lock, and flushed; otherwise a record is made and handled by logging.
    """
    if logger.filters or not _plain_logger():
        logger.handle(_record(message))
        return
    frames: dict[logging.Handler, tuple[logging.Formatter | None, type, tuple[str, str] | None]] | None
    frames = getattr(_per_thread, "frames", None)
    if frames is None:
        frames = _per_thread.frames = {}
    lines = []
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if handler.level > logging.INFO:
                continue
            known = frames.get(handler)
            if known is None or known[0] is not handler.formatter or known[1] is not type(handler):
                if len(frames) >= _MAX_FRAMES:  # handlers replaced by new logging configurations
                    frames.clear()
                known = frames[handler] = (handler.formatter, type(handler), _frame(handler))
            frame = known[2]
            lock = handler.lock
            if frame is None or handler.filters or handler.stream is None or lock is None:  # type: ignore[attr-defined]
                logger.handle(_record(message))
                return
            lines.append((handler, lock, frame[0] + message + frame[1] + handler.terminator))  # type: ignore[attr-defined]
        current = current.parent if current.propagate else None
    if not lines:  # no handler at all: logging's last resort (or its one-time warning)
        logger.handle(_record(message))
        return
    for handler, lock, text in lines:
        # What the handler's handle() does once its format gave the text: under the lock its
        # acquire() takes, StreamHandler.emit's write and flush.
        with lock:
            stream = handler.stream  # type: ignore[attr-defined]
            if stream is None:  # closed by another thread meanwhile: its emit reopens a file
                handler.handle(_record(message))
                continue
            try:
                stream.write(text)
                if hasattr(stream, "flush"):
                    stream.flush()
            except RecursionError:
                raise
            except Exception:
                handler.handleError(_record(message))


def _frame(handler: logging.Handler) -> tuple[str, str] | None:
    """
    The text ``handler`` writes before and after the message of an access record, if that
    is all it writes: it is a StreamHandler or FileHandler (not a subclass that changes how a
    record is handled, formatted, emitted or flushed, or how its lock is taken), its formatter
    is logging's own Formatter (or the default one), and probe records, with other
    messages, times and tasks, are formatted as that text around their message. ``None`` for any other (one that
    writes the time, pads or quotes the message, a subclass...).
    """
    kind = type(handler)
    if not (
        (kind.emit is _STREAM_EMIT or kind.emit is _FILE_EMIT)
        and kind.handle is _HANDLE
        and kind.format is _FORMAT
        and kind.flush is _STREAM_FLUSH
        and kind.acquire is _ACQUIRE
        and kind.release is _RELEASE
        and kind.filter is _FILTER
    ):
        return None
    formatter = handler.formatter
    if formatter is not None and (
        type(formatter) is not logging.Formatter or any(name in vars(formatter) for name in _FORMATTER_METHODS)
    ):
        return None
    texts = []
    for message, created, task in _PROBES:
        record = _record(message)
        record.created = created
        record.msecs = created % 1.0 * 1000.0 // 1.0
        record.relativeCreated = created / 7
        if _TASK_NAMES:
            record.taskName = task
        try:
            texts.append(handler.format(record))
        except Exception:
            return None
    empty, *others = texts
    for cut in range(len(empty) + 1):
        before, after = empty[:cut], empty[cut:]
        if all(text == before + probe[0] + after for text, probe in zip(others, _PROBES[1:], strict=True)):
            return before, after
    return None


def _record(message: str) -> logging.LogRecord:
    """The record of one line, as the logger's ``makeRecord`` makes it (the caller is not looked up)."""
    return logger.makeRecord(logger.name, logging.INFO, __file__, _LOG_LINE, message, (), None, "log")
