"""
Every limit and timeout of the server, with its default, in one place. Both backends read
their limits from a :class:`ServerSettings`; the components build it from their config keys.
The WebSocket limits (the ``ws_*`` keys) are those of
:class:`~kyoukai.protocol.ws.settings.WebSocketSettings`, which the settings include.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from kyoukai.protocol.ws.settings import WebSocketSettings

logger = logging.getLogger("kyoukai")

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class ServerSettings(WebSocketSettings):
    """
    Limits and timeouts; each field is a config key of the components. The ``ws_*`` fields
    are inherited from :class:`~kyoukai.protocol.ws.settings.WebSocketSettings` (see there).
    """

    #: Largest request head in bytes (HTTP/1.1 request line and headers: 431 past it) and the
    #: advertised ``SETTINGS_MAX_HEADER_LIST_SIZE`` of HTTP/2.
    max_header_size: int = 64 * KiB
    #: Most header fields in one request (431, or RST_STREAM on HTTP/2).
    max_header_count: int = 100
    #: Largest request body handed complete to a handler (413 past it). Routes declared with
    #: ``stream_body=True`` read their body as it arrives and are not bound by it.
    max_body_size: int = 16 * MiB
    #: Seconds an idle keep-alive connection stays open.
    keep_alive_timeout: float = 30.0
    #: Seconds a client has to send a complete request head (HTTP/1.1: 408 then close) or the
    #: connection preface and first SETTINGS (HTTP/2).
    header_timeout: float = 10.0
    #: Seconds a request body may stall (no new data while the app waits for it) before the
    #: request is answered 408: a slow-upload ("slow POST") defence.
    body_timeout: float = 60.0
    #: Seconds in-flight requests get to finish when the server stops.
    shutdown_timeout: float = 10.0
    #: Largest chunk head (the size line of a chunked HTTP/1.1 request body, extensions
    #: included) in bytes: 400 and close past it.
    max_chunk_head_size: int = 4 * KiB
    #: Request body bytes an HTTP/2 stream may still send, read and thrown away (with their
    #: flow-control credit returned), after its response has ended before the request did
    #: (an early 413, a handler that ignored the upload), so that the client sees the response
    #: rather than a reset; past it, or after ``discard_timeout``, RST_STREAM NO_ERROR.
    max_discard_size: int = 64 * MiB
    #: Seconds such a stream may go without sending before it is reset (as nginx's
    #: ``lingering_timeout``: a slow client still uploading is not cut off).
    discard_timeout: float = 5.0
    #: Request body bytes buffered per request or stream before the client is made to wait.
    body_buffer_size: int = 1 * MiB
    #: Requests read ahead on one HTTP/1.1 connection while an earlier one is being answered.
    max_pipelined_requests: int = 16
    #: HTTP/2 ``SETTINGS_MAX_CONCURRENT_STREAMS``: streams open at once per connection; one
    #: more is refused with RST_STREAM REFUSED_STREAM.
    max_concurrent_streams: int = 100
    #: HTTP/2 ``SETTINGS_INITIAL_WINDOW_SIZE``: flow-control window of each stream, in bytes.
    stream_window_size: int = 1 * MiB
    #: HTTP/2 connection flow-control window, in bytes.
    connection_window_size: int = 4 * MiB
    #: HTTP/2 ``SETTINGS_MAX_FRAME_SIZE`` advertised to the peer.
    max_frame_size: int = 16 * KiB
    #: HTTP/2 control frames (SETTINGS, PING, PRIORITY, small WINDOW_UPDATE, empty DATA,
    #: unknown types) a client may send in a burst; past it: GOAWAY ENHANCE_YOUR_CALM.
    max_control_frames: int = 1000
    #: Control frames per second that refill that burst.
    control_frame_rate: float = 100.0
    #: HTTP/2 stream resets (sent by the client, or refusals the server had to send) in a burst
    #: before GOAWAY ENHANCE_YOUR_CALM: the rapid-reset defence.
    max_stream_resets: int = 200
    #: Resets per second that refill that burst.
    stream_reset_rate: float = 20.0
    #: Seconds a response may wait for the client to open its window or read the socket before
    #: the stream (HTTP/2) or connection (HTTP/1.1) is dropped.
    send_timeout: float = 30.0

    @cached_property
    def websocket(self) -> WebSocketSettings:
        """The ``ws_*`` settings alone, as the WebSocket core takes them."""
        return WebSocketSettings(
            **{field.name: getattr(self, field.name) for field in dataclasses.fields(WebSocketSettings)}
        )

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ServerSettings:
        """
        Take the keys of ``config`` that are settings, check them and build the settings.

        :raises ValueError: naming the key and the value when a value is not a positive number
            (or outside the range HTTP/2 allows; ``null`` or 0 turns off ``ws_ping_interval``
            and ``ws_idle_timeout``), or a switch such as ``ws_compression`` is not a boolean.
        """
        values: dict[str, Any] = {}
        names = [field.name for field in dataclasses.fields(cls)]
        for key in config:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1, cutoff=0.85)
                if close:
                    logger.warning("Unknown config key %r: did you mean %r?", key, close[0])
        for field in dataclasses.fields(cls):
            if field.name not in config:
                continue
            value = config[field.name]
            if field.type in ("bool", bool):
                if not isinstance(value, bool):
                    raise ValueError(f"config key {field.name!r} must be true or false, not {value!r}")
                values[field.name] = value
                continue
            if field.type == "float | None" and (value is None or (value == 0 and not isinstance(value, bool))):
                values[field.name] = None  # the timer is off
                continue
            kind = int if field.type in ("int", int) else float
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"config key {field.name!r} must be a positive number, not {value!r}")
            if kind is int and value != int(value):
                raise ValueError(f"config key {field.name!r} must be a whole number, not {value!r}")
            values[field.name] = kind(value)
        settings = cls(**values)
        settings._check_http2_ranges()
        return settings

    def _check_http2_ranges(self) -> None:
        if not 16 * KiB <= self.max_frame_size <= 16 * MiB - 1:
            raise ValueError(
                f"config key 'max_frame_size' must be between 16384 and 16777215, not {self.max_frame_size}"
            )
        for key in ("stream_window_size", "connection_window_size"):
            value = getattr(self, key)
            if value > 2**31 - 1:
                raise ValueError(f"config key {key!r} must be at most 2147483647, not {value}")
        if self.connection_window_size < 65535:
            raise ValueError(
                f"config key 'connection_window_size' must be at least 65535, not {self.connection_window_size}"
            )
