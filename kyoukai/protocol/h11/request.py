"""What the HTTP/1.1 core keeps of each request: :class:`H11Request`, and :class:`Rejection` for one refused."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kyoukai.protocol.ws.handshake import HandshakeRejection, WebSocketOffer


class H11Request:
    """
    One request on an HTTP/1.1 connection: its head as parsed so far, then its environ, the
    progress of its body and how its response is framed.
    """

    __slots__ = (
        "url",
        "headers",
        "head_size",
        "host",
        "version",
        "keep_alive",
        "environ",
        "expected_length",
        "received",
        "unread",
        "ended",
        "expects_continue",
        "chunked",
        "app_state",
        "websocket",
    )

    def __init__(self) -> None:
        #: The request target, in the pieces the parser gave.
        self.url: list[bytes] = []
        #: The header fields: the names as received, the values decoded as latin-1.
        self.headers: list[tuple[bytes, str]] = []
        #: Bytes of the head so far, as counted against ``max_header_size``.
        self.head_size = 0
        #: The ``Host`` value, once seen.
        self.host: bytes | None = None
        #: ``"1.0"``, ``"1.1"``...
        self.version = "1.1"
        #: Whether the connection stays open after this exchange: what the request asks, then
        #: what its response decided (see :meth:`~.H11ServerConnection.response_head`).
        self.keep_alive = True
        #: The WSGI environ, from the end of the head on; ``wsgi.input`` is the shell's to set.
        self.environ: dict[str, Any]
        #: The ``Content-Length`` (``None``: chunked, or no body).
        self.expected_length: int | None = None
        #: Body bytes received.
        self.received = 0
        #: Body bytes handed to the shell and not yet reported consumed.
        self.unread = 0
        #: Whether the whole request (body included) has been received.
        self.ended = False
        #: Whether the client waits for ``100 Continue`` before sending the body.
        self.expects_continue = False
        #: Whether the response body is sent in chunked transfer coding.
        self.chunked = False
        #: What the shell keeps for the request (its body reader).
        self.app_state: Any = None
        #: For a request asking for a WebSocket (``Upgrade: websocket``): its handshake read
        #: as a :class:`~kyoukai.protocol.ws.handshake.WebSocketOffer` or a
        #: :class:`~kyoukai.protocol.ws.handshake.HandshakeRejection`; ``None`` otherwise.
        self.websocket: WebSocketOffer | HandshakeRejection | None = None


class Rejection:
    """An error answer queued behind the requests before it; the connection closes after it."""

    __slots__ = ("status", "message", "version")

    def __init__(self, status: int, message: str, version: str) -> None:
        self.status = status
        self.message = message
        #: The HTTP version of the answer (that of the request refused, if its head came in).
        self.version = version
