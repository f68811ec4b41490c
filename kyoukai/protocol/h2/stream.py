"""One HTTP/2 stream as the server core sees it: what its response still has to send, and where its request is."""

from __future__ import annotations

from collections import deque
from typing import Any


class Stream:
    """
    The core's record of an open stream (h2 keeps the protocol state machine; this keeps what
    Kyoukai adds to it). A stream lives from its request head until both its request and its
    response are over, or it is reset.
    """

    __slots__ = (
        "stream_id",
        "app_state",
        "pending",
        "pending_size",
        "end_pending",
        "trailers",
        "response_started",
        "response_ended",
        "in_ready",
        "stalled_since",
        "request_ended",
        "unacked",
        "finished",
        "discard_left",
        "discard_deadline",
        "expected_length",
        "received",
    )

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id
        #: Whatever the shell keeps for the stream (its request body and handler).
        self.app_state: Any = None
        #: Response body bytes queued and not yet framed, in order.
        self.pending: deque[memoryview] = deque()
        self.pending_size = 0
        #: END_STREAM goes out after the pending bytes (or the trailers do).
        self.end_pending = False
        #: Trailer fields that end the stream after the pending bytes.
        self.trailers: list[tuple[str, str]] | None = None
        #: The final response head went out; END_STREAM went out.
        self.response_started = False
        self.response_ended = False
        #: Whether the stream is in the scheduler's ready queue.
        self.in_ready = False
        #: When a closed window stopped it from sending its pending bytes (``None``: it is not).
        self.stalled_since: float | None = None
        #: The client ended the request.
        self.request_ended = False
        #: Request body bytes handed to the app whose flow-control credit is not back yet.
        self.unacked = 0
        #: The app is done with the stream.
        self.finished = False
        #: After an early response: body bytes the client may still send to be thrown away.
        self.discard_left: int | None = None
        self.discard_deadline = 0.0
        #: The request's content-length, if any, and the body bytes received.
        self.expected_length: int | None = None
        self.received = 0

    @property
    def discarding(self) -> bool:
        """Whether the response is over and the rest of the request body is being thrown away."""
        return self.discard_left is not None

    def queue(self, data: bytes | memoryview) -> None:
        """Queue response body bytes."""
        if data:
            view = data if isinstance(data, memoryview) else memoryview(data)
            self.pending.append(view)
            self.pending_size += len(view)

    def clear(self) -> None:
        """Forget what was queued (the stream is gone)."""
        self.pending.clear()
        self.pending_size = 0
        self.end_pending = False
        self.trailers = None
