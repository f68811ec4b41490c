"""
What the protocol cores tell their I/O shells: small records, one per thing that happened.

A shell feeds a core bytes (and the time), takes these events, and acts on them: it starts a
handler for a request, feeds a request body, lets a waiting response go on, stops a handler
whose stream is gone, or closes the connection.
"""

from __future__ import annotations

from dataclasses import dataclass


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
