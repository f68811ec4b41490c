"""
The limits and timeouts of a WebSocket session, with their defaults: :class:`WebSocketSettings`.

The names follow :class:`~kyoukai.settings.ServerSettings` (each field is meant as a config key
of the components), with a ``ws_`` prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class WebSocketSettings:
    """Limits and timeouts of one WebSocket, over HTTP/1.1 or HTTP/2."""

    #: Largest message in bytes (after decompression). Past it the connection closes with 1009
    #: as soon as a frame header or the decompressed data shows it, before the rest is buffered.
    ws_max_message_size: int = 16 * MiB
    #: Bytes of received messages the app has not read yet past which the shell stops reading
    #: (HTTP/1.1) or holds back flow-control credit (HTTP/2). A message being received is not
    #: counted (``ws_max_message_size`` bounds it), so a message larger than this still arrives.
    ws_buffer_size: int = 1 * MiB
    #: Seconds without a byte from the peer after which a ping is sent (``None`` or 0: never).
    ws_ping_interval: float | None = 20.0
    #: Seconds the peer has to answer that ping (any byte will do) before it is taken for dead:
    #: the connection ends with 1011.
    ws_ping_timeout: float = 20.0
    #: Seconds without a whole message either way after which the server closes with 1001
    #: (``None`` or 0, the default: never; pings keep checking that the peer is alive).
    ws_idle_timeout: float | None = None
    #: Seconds our Close waits for the peer's Close before the connection ends anyway.
    ws_close_timeout: float = 10.0
    #: Seconds the peer may leave our output unread (the transport full) before it is dropped.
    ws_send_timeout: float = 30.0
    #: PING and PONG frames the peer may send in a burst; past it the connection closes with
    #: 1008 (each ping costs a pong).
    ws_max_control_frames: int = 100
    #: PING and PONG frames per second that refill that burst.
    ws_control_frame_rate: float = 10.0
    #: Frames a message may be split into whatever their size; past it, its frames must average
    #: ``ws_min_fragment_size`` bytes or the connection closes with 1008 (a tiny-fragment flood
    #: costs the server a frame's work per byte).
    ws_fragment_grace: int = 64
    #: See ``ws_fragment_grace``.
    ws_min_fragment_size: int = 256
    #: Agree to permessage-deflate (RFC 7692) when the client offers it, as browsers do; the
    #: inflated size of a message is bounded by ``ws_max_message_size`` all the same.
    ws_compression: bool = True
