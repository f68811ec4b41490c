"""
Idle connections: open many to a server, take each through its handshake, leave them open,
and read how much the server's resident memory grew (``VmRSS``) per connection.

- HTTP/2 (cleartext, prior knowledge): the client preface and an empty SETTINGS frame; then
  the server's SETTINGS is read and acknowledged, and its acknowledgement of ours awaited.
- HTTP/1.1: one ``GET /`` answered in full on a keep-alive connection, which then stays open
  between requests, as a browser's does.

Connections are opened one after the other, so no listen backlog overflows.
"""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS, GOAWAY = 0x4, 0x7
ACK = 0x1
#: Seconds a handshake (or the HTTP/1.1 request) may take.
HANDSHAKE_TIMEOUT = 10.0
#: Seconds the server's RSS gets to settle before the last reading is taken as it is.
SETTLE_LIMIT = 10.0


class IdleError(RuntimeError):
    """A connection could not be opened, or the server answered something unexpected."""


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """An HTTP/2 frame: 9-byte header and payload."""
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(">I", stream_id) + payload


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise IdleError("the server closed the connection during the handshake")
        data += chunk
    return data


def h2c_handshake(sock: socket.socket) -> None:
    """Preface and SETTINGS out, the server's SETTINGS in (and acknowledged), its ACK of ours in."""
    sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
    settings_seen = acked = False
    while not (settings_seen and acked):
        header = _recv_exactly(sock, 9)
        length = int.from_bytes(header[:3], "big")
        kind, flags = header[3], header[4]
        if not settings_seen and (kind != SETTINGS or flags & ACK):
            # RFC 9113 section 3.4: the server's preface is a SETTINGS frame.
            raise IdleError(f"the server does not speak HTTP/2: it answered {header!r} to the preface")
        _recv_exactly(sock, length)
        if kind == GOAWAY:
            raise IdleError("the server sent GOAWAY during the handshake")
        if kind == SETTINGS and flags & ACK:
            acked = True
        elif kind == SETTINGS:
            settings_seen = True
            sock.sendall(frame(SETTINGS, ACK, 0))


def h1_request(sock: socket.socket) -> None:
    """``GET /`` on a keep-alive connection, its response read to the end of the body."""
    sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise IdleError("the server closed the connection before answering GET /")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1.1 200"):
        raise IdleError(f"GET / answered {lines[0]!r}")
    fields = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
    fields = {name.strip().lower(): value.strip() for name, value in fields.items()}
    if fields.get("connection", "").lower() == "close":
        raise IdleError("the server closes the connection after GET / (Connection: close)")
    if "content-length" not in fields:
        raise IdleError("the response to GET / has no Content-Length")
    _recv_exactly(sock, int(fields["content-length"]) - len(body))


def open_connection(port: int, protocol: str) -> socket.socket:
    """A connection to ``127.0.0.1:port``, through its handshake (``"h2c"``) or one request (``"h1"``)."""
    sock = socket.create_connection((HOST, port), timeout=HANDSHAKE_TIMEOUT)
    try:
        (h2c_handshake if protocol == "h2c" else h1_request)(sock)
    except BaseException:
        sock.close()
        raise
    return sock


def count_closed(socks: list[socket.socket]) -> int:
    """How many of ``socks`` the server has closed (or reset) since they were opened."""
    closed = 0
    for sock in socks:
        # Non-blocking: a socket with a timeout would wait that long for something to read.
        sock.setblocking(False)
        try:
            # Whatever the server sent since (a late WINDOW_UPDATE, a GOAWAY) comes before the end.
            while sock.recv(65536):
                pass
            closed += 1
        except BlockingIOError:
            pass  # nothing more to read: open and idle
        except OSError:
            closed += 1
    return closed


def vm_rss_kib(pid: int) -> int | None:
    """The resident set size now (``VmRSS``, not the peak) of process ``pid`` in KiB, or ``None``."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def settled_rss_kib(
    pid: int, *, interval: float = 0.2, span: int = 5, slack: int = 8, limit: float = SETTLE_LIMIT
) -> tuple[int, bool]:
    """
    ``VmRSS`` of ``pid`` once it has stayed within ``slack`` KiB over ``span`` readings taken
    ``interval`` seconds apart (and ``True``), or the last reading after ``limit`` seconds (and
    ``False``).
    """
    readings: list[int] = []
    deadline = time.monotonic() + limit
    while True:
        rss = vm_rss_kib(pid)
        if rss is None:
            raise IdleError(f"cannot read /proc/{pid}/status: the server has exited")
        readings = [*readings[-(span - 1) :], rss]
        if len(readings) == span and max(readings) - min(readings) <= slack:
            return rss, True
        if time.monotonic() > deadline:
            return rss, False
        time.sleep(interval)


def measure(pid: int, port: int, protocol: str, count: int) -> dict[str, Any]:
    """
    Open ``count`` idle connections (``protocol`` ``"h2c"`` or ``"h1"``) to the server ``pid``
    listening on ``port``; its settled ``VmRSS`` before and with them open, and the growth per
    connection in KiB. One connection is opened and closed first, so that what the first one
    loads (lazy imports, buffers kept for reuse) is not counted as the cost of each.
    """
    open_connection(port, protocol).close()
    before, settled_before = settled_rss_kib(pid)
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(open_connection(port, protocol))
        after, settled_after = settled_rss_kib(pid)
        closed = count_closed(socks)
    finally:
        for sock in socks:
            sock.close()
    if closed:
        raise IdleError(f"the server closed {closed} of the {count} idle connections while they were measured")
    return {
        "kib_per_conn": (after - before) / count,
        "idle_before_mib": before / 1024,
        "idle_open_mib": after / 1024,
        "rss_settled": settled_before and settled_after,
    }
