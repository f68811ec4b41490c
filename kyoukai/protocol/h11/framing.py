"""
The framing of HTTP/1.1 requests, measured ahead of the parser: where a head's blank line is,
and the chunk heads and trailer section of a chunked body, each against its limit.

llhttp takes all it is given and reports no offsets, so the connection feeds it piece by piece
and these functions say where each piece ends. They only measure: llhttp still validates every
byte.
"""

from __future__ import annotations


class LimitExceeded(Exception):
    """A request broke a limit or a rule: stop parsing it and answer ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ChunkedBody:
    """
    The framing of one chunked request body, scanned ahead of the parser: each chunk head (the
    size line) is measured up to its LF, each chunk's data is skipped in one step, and the
    parser is fed what was scanned in one call. Chunk heads and the trailer section are
    measured exactly, with no work per byte of chunk data. This only measures: llhttp still
    validates every byte, and a size line this cannot read is left to llhttp to reject.

    :param max_head: ``max_chunk_head_size``: the longest chunk head, its CRLF included.
    :param max_trailer: ``max_header_size``: the largest trailer section.
    """

    __slots__ = ("max_head", "max_trailer", "state", "head", "left", "tail")

    def __init__(self, max_head: int, max_trailer: int) -> None:
        self.max_head = max_head
        self.max_trailer = max_trailer
        #: ``"head"``, ``"data"`` (chunk data and its CRLF), ``"trailer"``, ``"unreadable"`` (a
        #: size line this could not read, handed to llhttp to reject) or ``"done"``.
        self.state = "head"
        #: The start of a chunk head that the end of a read cut.
        self.head = bytearray()
        #: In ``"data"``: bytes still to come; in ``"trailer"``: room left in the section.
        self.left = 0
        #: In ``"trailer"``: the last bytes before the next read, for a blank line split by it.
        self.tail = b""

    def piece_end(self, data: bytes, pos: int) -> int:
        """
        How far from ``pos`` the parser may be fed: through every chunk whose head has been
        measured, up to the end of the body or of ``data``.

        :raises LimitExceeded: when a chunk head or the trailer section is past its limit.
        """
        end = len(data)
        if self.state == "data":
            if end - pos < self.left:
                self.left -= end - pos
                return end
            pos += self.left
            self.state = "head"
        if self.state == "head":
            head, max_head = self.head, self.max_head
            while pos < end:
                room = max_head - len(head)
                lf = data.find(b"\n", pos, pos + room)
                if lf < 0:
                    if end - pos >= room:
                        raise LimitExceeded(400, f"Chunk head longer than max_chunk_head_size={max_head} bytes")
                    head += data[pos:]
                    return end
                if head:
                    head += data[pos : lf + 1]
                    size = chunk_size(head, 0, len(head) - 1)
                    head.clear()
                else:
                    size = chunk_size(data, pos, lf)
                pos = lf + 1
                if size is None:
                    # llhttp will reject this line; if it does not, the next call does.
                    self.state = "unreadable"
                    return pos
                if not size:
                    # The CRLF of the last chunk's line starts the search for the blank line.
                    self.state, self.left, self.tail = "trailer", self.max_trailer, b"\r\n"
                    break
                left = size + 2  # the data and its CRLF
                if end - pos < left:
                    self.state, self.left = "data", left - (end - pos)
                    return end
                pos += left
        if pos == end:
            return end
        if self.state == "trailer":
            stop = blank_line_end(data, pos, self.tail, pos + self.left)
            if stop >= 0:
                self.state = "done"
                return stop
            if end - pos >= self.left:
                raise LimitExceeded(431, f"Trailer section larger than max_header_size={self.max_trailer} bytes")
            self.left -= end - pos
            self.tail = last_bytes(self.tail, data, pos)
            return end
        if self.state == "unreadable":
            raise LimitExceeded(400, "Unreadable chunk size line")
        # "done", yet llhttp has not ended the message: it has the last word on the rest.
        return end


def chunk_size(line: bytes | bytearray, start: int, lf: int) -> int | None:
    """
    The size the chunk head ``line[start:lf + 1]`` (``HEXDIG+ [; extensions] CRLF``) announces,
    or ``None``. ``int()`` is more lenient than the grammar (signs, spaces, ``_``), but a line
    it reads differently is one llhttp rejects, and the piece fed to llhttp includes it.
    """
    try:
        size = int(line[start : lf - 1], 16)  # no extensions: the common case
    except ValueError:
        semi = line.find(b";", start, lf)
        try:
            size = int(line[start:semi], 16) if semi > start else -1
        except ValueError:
            return None
    return size if size >= 0 else None


def blank_line_end(data: bytes, pos: int, tail: bytes, limit: int) -> int:
    """
    The index just past the first CRLF CRLF in ``data[pos:limit]``, or in one that begins in
    ``tail`` (the bytes just before ``pos``); -1 if there is none.
    """
    if tail:
        found = (tail + data[pos : pos + 3]).find(b"\r\n\r\n")
        if found >= 0:
            return pos + found + 4 - len(tail)
    found = data.find(b"\r\n\r\n", pos, limit)
    return found + 4 if found >= 0 else -1


def last_bytes(tail: bytes, data: bytes, pos: int) -> bytes:
    """The last three bytes of ``tail + data[pos:]``: enough to hold the start of a CRLF CRLF."""
    return data[-3:] if len(data) - pos >= 3 else (tail + data[pos:])[-3:]
