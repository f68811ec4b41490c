"""
What the protocol cores tell their I/O shells: small records, one per thing that happened.

A shell feeds a core bytes (and the time), takes these events, and acts on them: it starts a
handler for a request, feeds a request body, lets a waiting response go on, stops a handler
whose stream is gone, hands an HTTP/1.1 connection over to HTTP/2, or closes the connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kyoukai.protocol.h11.request import H11Request


@dataclass(slots=True)
class RequestReceived:
    """A valid request head: start its handler."""

    stream_id: int
    #: The header block, pseudo-headers first, as ``(name, value)`` bytes.
    headers: list[tuple[bytes, bytes]]
    #: Whether the head also ended the request (no body).
    ended: bool


@dataclass(slots=True)
class RequestData:
    """Request body bytes; their flow-control credit goes back once the app acknowledges them."""

    stream_id: int
    data: bytes


@dataclass(slots=True)
class RequestEnded:
    """The request body is complete."""

    stream_id: int


@dataclass(slots=True)
class RequestTrailers:
    """The request's trailer fields (the request is complete after them)."""

    stream_id: int
    fields: list[tuple[bytes, bytes]]


@dataclass(slots=True)
class StreamSendable:
    """Everything queued for the stream's response went out: a waiting sender may go on."""

    stream_id: int


@dataclass(slots=True)
class StreamClosed:
    """The stream is gone before its handler finished (reset, or the connection ended): stop it."""

    stream_id: int
    #: What the shell kept for the stream (:attr:`Stream.app_state`), if anything.
    app_state: object = None


@dataclass(slots=True)
class ConnectionClosed:
    """The core is done with the connection: write what it still has to send, then close."""

    #: Drop the connection at once instead (the client stopped reading).
    abort: bool = False


Event = (
    RequestReceived | RequestData | RequestEnded | RequestTrailers | StreamSendable | StreamClosed | ConnectionClosed
)


# HTTP/1.1 (kyoukai.protocol.h11): the request record stands where HTTP/2 has a stream id.


@dataclass(slots=True)
class H11RequestReceived:
    """
    An HTTP/1.1 request head: give it a body reader (``request.environ`` has all but its
    ``wsgi.input``) and answer it in turn (see :meth:`~.H11ServerConnection.next_answer`).
    """

    request: H11Request


@dataclass(slots=True)
class H11RequestData:
    """Request body bytes; report them consumed (:meth:`~.H11ServerConnection.body_consumed`) as the app reads them."""

    request: H11Request
    data: bytes


@dataclass(slots=True)
class H11RequestEnded:
    """The request body is complete."""

    request: H11Request


@dataclass(slots=True)
class H11RequestRejected:
    """
    A request broke a limit or a rule: stop reading. The answer (``status``, ``message``) is
    queued behind the requests before it; the connection closes after it.
    """

    status: int
    message: str
    #: The request whose body this cuts off (its head was announced), if any: its reader
    #: should fail with ``status``.
    request: H11Request | None


@dataclass(slots=True)
class H2PrefaceReceived:
    """
    The connection opens with the HTTP/2 preface: hand it to HTTP/2, which reads from ``data``
    on, and must have the rest of it (and the client's SETTINGS) by ``deadline``, the
    ``header_timeout`` that has run since the connection opened.
    """

    data: bytes
    deadline: float | None = None


@dataclass(slots=True)
class H2cUpgradeAccepted:
    """
    An ``Upgrade: h2c`` request accepted: write ``response`` (``101 Switching Protocols``), then
    hand the connection to HTTP/2, which serves the request (``environ``) as stream 1 and reads
    from ``data`` on.
    """

    environ: dict[str, Any]
    data: bytes
    response: bytes


H11Event = (
    H11RequestReceived
    | H11RequestData
    | H11RequestEnded
    | H11RequestRejected
    | H2PrefaceReceived
    | H2cUpgradeAccepted
    | ConnectionClosed
)
