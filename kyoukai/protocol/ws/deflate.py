"""
permessage-deflate (RFC 7692) for wsproto, with a bound on what a message inflates to:
:class:`DeflateExtension`, configured by the :class:`DeflateParameters` the handshake agreed.

wsproto's own ``PerMessageDeflate`` inflates each frame without a limit, so a few megabytes of
compressed zeros become gigabytes in memory before any size check can run. Here the
decompressor runs in bounded steps, none past the room left in ``ws_max_message_size`` (plus
one byte, to tell "exactly full" from "over"), and going past it ends the connection with 1009.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from wsproto.extensions import Extension
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits

#: Window of our compressor unless the client asks for less: 4 KiB of history, which with
#: :data:`MEM_LEVEL` keeps the compressor near 32 KiB per connection (15 bits would be 256 KiB).
SERVER_WINDOW_BITS = 12
#: Window we ask of the client's compressor when it says it can be limited.
CLIENT_WINDOW_BITS = 12
#: zlib's memLevel for our compressor (its hash table: 2 ** (MEM_LEVEL + 9) bytes).
MEM_LEVEL = 5
#: The most bytes inflated in one call to zlib.
INFLATE_STEP = 256 * 1024
#: The end of a sync flush, left off each message by the sender (RFC 7692 section 7.2.1).
_SYNC_TAIL = b"\x00\x00\xff\xff"


@dataclass(frozen=True, slots=True)
class DeflateParameters:
    """What the handshake agreed for permessage-deflate (RFC 7692 section 7.1)."""

    #: Our compressor starts afresh with each message.
    server_no_context_takeover: bool = False
    #: The client's compressor starts afresh with each message (so may our decompressor).
    client_no_context_takeover: bool = False
    #: The window of our compressor, 9 to 15 (zlib cannot make a raw stream with 8).
    server_max_window_bits: int = SERVER_WINDOW_BITS
    #: The window the client's compressor may use, 8 to 15; ``None``: the client did not offer
    #: to be limited, so it may use 15 and the response must not name the parameter.
    client_max_window_bits: int | None = None

    def header_value(self) -> str:
        """The element of the response's ``Sec-WebSocket-Extensions`` that agrees to these."""
        parts = ["permessage-deflate"]
        if self.server_no_context_takeover:
            parts.append("server_no_context_takeover")
        if self.client_no_context_takeover:
            parts.append("client_no_context_takeover")
        parts.append(f"server_max_window_bits={self.server_max_window_bits}")
        if self.client_max_window_bits is not None:
            parts.append(f"client_max_window_bits={self.client_max_window_bits}")
        return "; ".join(parts)


class DeflateExtension(Extension):
    """
    The server's side of permessage-deflate, for ``wsproto.connection.Connection``: compresses
    every message sent and inflates compressed messages received, never past ``max_message_size``.

    :param parameters: what the handshake agreed.
    :param max_message_size: the most bytes a message may inflate to (``ws_max_message_size``).
    """

    name = "permessage-deflate"

    def __init__(self, parameters: DeflateParameters, max_message_size: int) -> None:
        self.parameters = parameters
        self.max_message_size = max_message_size
        #: Why the extension ended the connection, once it has.
        self.problem: str | None = None
        self._compressor: zlib._Compress | None = None
        self._decompressor: zlib._Decompress | None = None
        #: Whether the frame being received is a data frame (control frames are never compressed).
        self._data_frame = False
        #: Whether the message being received is compressed (RSV1 on its first frame).
        self._compressed = False
        #: Bytes that message has inflated to so far.
        self._inflated = 0

    def enabled(self) -> bool:
        """Always: the session installs the extension only once the handshake agreed to it."""
        return True

    def offer(self) -> str:
        """The agreed parameters as a header element (wsproto asks this of an extension it offers)."""
        return self.parameters.header_value()

    def frame_inbound_header(
        self, proto: FrameDecoder | FrameProtocol, opcode: Opcode, rsv: RsvBits, payload_length: int
    ) -> CloseReason | RsvBits:
        """Note whether a message starts compressed; RSV1 anywhere else is a protocol error."""
        if rsv.rsv1 and (opcode.iscontrol() or opcode is Opcode.CONTINUATION):
            self.problem = f"RSV1 set on a {opcode.name} frame"
            return CloseReason.PROTOCOL_ERROR
        self._data_frame = not opcode.iscontrol()
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            self._compressed = rsv.rsv1
            self._inflated = 0
        return RsvBits(True, False, False)

    def frame_inbound_payload_data(self, proto: FrameDecoder | FrameProtocol, data: bytes) -> bytes | CloseReason:
        """Inflate a piece of a compressed message."""
        if not (self._data_frame and self._compressed):
            return data
        return self._inflate(data)

    def frame_inbound_complete(self, proto: FrameDecoder | FrameProtocol, fin: bool) -> bytes | CloseReason | None:
        """At the end of a compressed message: the last of its data, from the sync-flush tail."""
        if not (fin and self._data_frame and self._compressed):
            return None
        tail = self._inflate(_SYNC_TAIL)
        self._compressed = False
        assert self._decompressor is not None
        # A sender may end a message with a final block (RFC 7692 section 7.2.3.3): that stream
        # is over, the next message starts a new one.
        if self.parameters.client_no_context_takeover or self._decompressor.eof:
            self._decompressor = None
        return tail

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        if self._decompressor is None:
            self._decompressor = zlib.decompressobj(-(self.parameters.client_max_window_bits or 15))
        decompressor = self._decompressor
        pieces: list[bytes] = []
        while True:
            # In steps, each no larger than the room left plus one byte: a bomb is stopped
            # once it has made one byte more than the limit, and the pieces are joined only
            # when they fit.
            step = min(self.max_message_size - self._inflated + 1, INFLATE_STEP)
            try:
                piece = decompressor.decompress(data, step)
            except zlib.error as exc:
                self.problem = f"invalid compressed data: {exc}"
                return CloseReason.INVALID_FRAME_PAYLOAD_DATA
            self._inflated += len(piece)
            if self._inflated > self.max_message_size:
                self.problem = f"message larger than ws_max_message_size={self.max_message_size} bytes once inflated"
                return CloseReason.MESSAGE_TOO_BIG
            pieces.append(piece)
            data = decompressor.unconsumed_tail
            # A full step may leave output pending inside zlib even with no input left.
            if not data and len(piece) < step:
                return b"".join(pieces)

    def frame_outbound(
        self, proto: FrameDecoder | FrameProtocol, opcode: Opcode, rsv: RsvBits, data: bytes, fin: bool
    ) -> tuple[RsvBits, bytes]:
        """Compress a data frame; the first frame of a message gets RSV1."""
        if opcode.iscontrol():
            return rsv, data
        if self._compressor is None:
            self._compressor = zlib.compressobj(
                zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -self.parameters.server_max_window_bits, MEM_LEVEL
            )
        out = self._compressor.compress(data)
        if fin:
            out = (out + self._compressor.flush(zlib.Z_SYNC_FLUSH))[: -len(_SYNC_TAIL)]
            if self.parameters.server_no_context_takeover:
                self._compressor = None
        if opcode is not Opcode.CONTINUATION:
            rsv = RsvBits(True, rsv.rsv2, rsv.rsv3)
        return rsv, out
