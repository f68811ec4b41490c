"""A raw-socket HTTP/1.1 client for the HTTP/1.1 server tests: bytes out, parsed responses in."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field


@dataclass
class RawResponse:
    """One response as read off the wire."""

    version: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    #: The sizes of the chunks of a chunked body, in order.
    chunks: list[int] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        """The value of the first header called ``name`` (any case), or ``None``."""
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)


class RawClient:
    """
    One TCP connection to the server: :meth:`send` bytes, :meth:`read_response` parses one
    response. Every receive waits at most ``timeout`` seconds.
    """

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = bytearray()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def read_until(self, marker: bytes) -> bytes:
        """Everything up to and including ``marker``."""
        while marker not in self.buffer:
            if not self._fill():
                raise ConnectionError(f"closed before {marker!r}; got {self.buffer!r}")
        end = self.buffer.index(marker) + len(marker)
        data = bytes(self.buffer[:end])
        del self.buffer[:end]
        return data

    def read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise ConnectionError(f"closed after {len(self.buffer)} of {size} bytes")
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def read_head(self) -> RawResponse:
        """The status line and headers of the next response."""
        lines = self.read_until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        version, status, _ = lines[0].split(" ", 2)
        headers = [tuple(h.split(": ", 1)) for h in lines[1:] if h]
        return RawResponse(version, int(status), headers)

    def read_chunk(self) -> bytes:
        """One chunk of a chunked body (``b""`` for the last, whose trailer section is skipped)."""
        size = int(self.read_until(b"\r\n")[:-2].split(b";")[0], 16)
        if size == 0:
            while self.read_until(b"\r\n") != b"\r\n":
                pass
            return b""
        data = self.read_exactly(size)
        if self.read_exactly(2) != b"\r\n":
            raise ValueError("chunk not followed by CRLF")
        return data

    def read_response(self, *, head: bool = False) -> RawResponse:
        """The next complete response (``head``: the request was HEAD, so no body follows)."""
        response = self.read_head()
        if head or response.status in (204, 304) or response.status < 200:
            return response
        length = response.header("Content-Length")
        if length is not None:
            response.body = self.read_exactly(int(length))
        elif (response.header("Transfer-Encoding") or "").lower() == "chunked":
            parts = []
            while chunk := self.read_chunk():
                parts.append(chunk)
                response.chunks.append(len(chunk))
            response.body = b"".join(parts)
        else:
            response.body = self.read_until_closed()
        return response

    def read_until_closed(self) -> bytes:
        """Everything the server sends until it closes the connection."""
        while self._fill():
            pass
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    def is_closed_by_server(self) -> bool:
        """Whether the server closed the connection (waits up to the socket timeout)."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False


def request(
    method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"", *, version: str = "1.1"
) -> bytes:
    """The bytes of one request; adds ``Host`` and, with a body, ``Content-Length``."""
    all_headers = {"Host": "127.0.0.1"}
    if body:
        all_headers["Content-Length"] = str(len(body))
    all_headers.update(headers or {})
    head = f"{method} {path} HTTP/{version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in all_headers.items())
    return head.encode("latin-1") + b"\r\n" + body


def chunked(*parts: bytes) -> bytes:
    """``parts`` in chunked transfer coding, with the last chunk."""
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
