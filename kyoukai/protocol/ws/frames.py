"""
The frames read and written without wsproto: whole, unfragmented, uncompressed text and binary
messages, which is what most WebSocket traffic is (RFC 6455 section 5.2).

:func:`read_messages` takes the run of such frames at the start of a buffer, checking what
wsproto would check of them (the client's mask, no reserved bit, the shortest length encoding,
the size limit, UTF-8 for text); it stops at the first frame that is anything else (a control
frame, a fragment, a compressed or malformed frame, invalid UTF-8, one not all there), which
:class:`~kyoukai.protocol.ws.session.WebSocketSession` hands to wsproto whole, so wsproto sees
frame boundaries only and its state stays what it would have been. :func:`frame_length` says
where that frame ends; :func:`write_message` appends the frame of a message the server sends.
"""

from __future__ import annotations

import struct

#: FIN and the opcode of a whole text or binary frame, with no reserved bit.
TEXT_FRAME = 0x81
BINARY_FRAME = 0x82
_MASKED = 0x80
_LENGTH_16 = 126
_LENGTH_64 = 127
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")
_HEAD_16 = struct.Struct("!BBH")
_HEAD_64 = struct.Struct("!BBQ")
#: ``_XOR[k]`` maps each byte to itself XOR ``k``: unmasking is four ``bytes.translate``, one
#: for each byte of the key over every fourth byte of the payload.
_XOR = [bytes(b ^ k for b in range(256)) for k in range(256)]


def frame_length(data: bytes, pos: int) -> int | None:
    """
    The length (head and payload) of the frame starting at ``data[pos]`` as its head announces
    it, or ``None`` if its head is not all there. A head wsproto refuses may give any length:
    the connection ends at it anyway.
    """
    end = len(data)
    if pos + 2 > end:
        return None
    second = data[pos + 1]
    length = second & 0x7F
    head = 6 if second & _MASKED else 2
    if length == _LENGTH_16:
        if pos + 4 > end:
            return None
        length = _U16.unpack_from(data, pos + 2)[0]
        head += 2
    elif length == _LENGTH_64:
        if pos + 10 > end:
            return None
        length = _U64.unpack_from(data, pos + 2)[0]
        head += 8
    return head + length


def read_messages(data: bytes, pos: int, max_size: int, min_size: int) -> tuple[list[str | bytes], int, int]:
    """
    The messages of the whole, masked, unfragmented and uncompressed text and binary frames
    from ``data[pos]`` on, each no larger than ``max_size`` bytes nor smaller than ``min_size``;
    where they stop; and the payload length of the last (-1 if none).
    """
    messages: list[str | bytes] = []
    append = messages.append
    end = len(data)
    last = -1
    xor = _XOR
    while pos + 6 <= end:
        first = data[pos]
        if first != BINARY_FRAME and first != TEXT_FRAME:
            break
        second = data[pos + 1]
        if not second & _MASKED:
            break
        length = second & 0x7F
        start = pos + 6
        if length == _LENGTH_16:
            start += 2
            if start > end:
                break
            length = _U16.unpack_from(data, pos + 2)[0]
            if length < _LENGTH_16:
                break  # not the shortest encoding: wsproto refuses it
        elif length == _LENGTH_64:
            start += 8
            if start > end:
                break
            length = _U64.unpack_from(data, pos + 2)[0]
            if length <= 0xFFFF:
                break  # not the shortest encoding: wsproto refuses it
        stop = start + length
        if stop > end or length > max_size or length < min_size:
            break
        if length:
            key = data[start - 4 : start]
            payload = bytearray(length)
            payload[0::4] = data[start:stop:4].translate(xor[key[0]])
            payload[1::4] = data[start + 1 : stop : 4].translate(xor[key[1]])
            payload[2::4] = data[start + 2 : stop : 4].translate(xor[key[2]])
            payload[3::4] = data[start + 3 : stop : 4].translate(xor[key[3]])
        else:
            payload = bytearray()
        if first == TEXT_FRAME:
            try:
                append(payload.decode())
            except UnicodeDecodeError:
                break  # wsproto fails the connection with its own reason
        else:
            append(bytes(payload))
        last = length
        pos = stop
    return messages, pos, last


def write_message(out: bytearray, data: str | bytes) -> None:
    """Append to ``out`` the frame (unmasked, as a server sends it) of a whole text (``str``) or binary message."""
    if isinstance(data, str):
        first = TEXT_FRAME
        data = data.encode()
    else:
        first = BINARY_FRAME
    length = len(data)
    if length < _LENGTH_16:
        out.append(first)
        out.append(length)
    elif length <= 0xFFFF:
        out += _HEAD_16.pack(first, _LENGTH_16, length)
    else:
        out += _HEAD_64.pack(first, _LENGTH_64, length)
    out += data
