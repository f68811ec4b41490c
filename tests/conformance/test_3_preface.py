"""RFC 9113 section 3.4: the HTTP/2 connection preface."""

from __future__ import annotations

import time

from h2.errors import ErrorCodes
from h2client import PREFACE, parse_frames
from hyperframe.frame import GoAwayFrame, SettingsFrame

from .conftest import INDEX_BODY
from .h2conf import expect_connection_error, headers_frame, ping_frame, settings_frame, window_update_frame

#: ``header_timeout`` of the server that checks the preface timeouts.
SHORT_TIMEOUT = 0.5


def read_to_close(client, timeout: float) -> bytes:
    """Raw bytes until the server closes; AssertionError if it is still open after ``timeout``."""
    received = bytearray(client._buffer)
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"the server kept the connection open for {timeout}s; got {bytes(received)!r}")
        client.sock.settimeout(remaining)
        try:
            chunk = client.sock.recv(65536)
        except TimeoutError:
            continue
        except (ConnectionResetError, OSError):
            chunk = b""
        if not chunk:
            return bytes(received)
        received += chunk


def goaway_codes(data: bytes) -> list[int]:
    return [f.error_code for f in parse_frames(data) if isinstance(f, GoAwayFrame)]


def test_valid_preface(target):
    """Preface + SETTINGS: the server's first frame is a SETTINGS (not an ACK), it ACKs ours, serves."""
    client = target.connect()
    client.wait_ready()
    first = client.frames[0]
    assert isinstance(first, SettingsFrame) and "ACK" not in first.flags, client.describe_frames()
    # a server may not offer push; values within the ranges of RFC 9113 section 6.5.2
    settings = first.settings
    assert settings.get(SettingsFrame.ENABLE_PUSH, 0) == 0, settings
    assert 16384 <= settings.get(SettingsFrame.MAX_FRAME_SIZE, 16384) <= 2**24 - 1, settings
    assert settings.get(SettingsFrame.INITIAL_WINDOW_SIZE, 65535) <= 2**31 - 1, settings
    stream = client.get("/")
    assert stream.status == 200 and bytes(stream.data) == INDEX_BODY


def test_preface_one_byte_at_a_time(target):
    """A preface and SETTINGS split over many writes is still a valid preface."""
    client = target.connect(handshake=False)
    for byte in PREFACE + settings_frame():
        client.send_raw(bytes([byte]))
    client.wait_ready()
    target.assert_serves(client)


def test_preface_and_requests_in_one_write(target):
    """Preface, SETTINGS, WINDOW_UPDATE and a request in a single write are all handled."""
    client = target.connect(handshake=False)
    stream_id = client.next_id()
    request = headers_frame(stream_id, client.request_block("/"))
    client.send_raw(PREFACE + settings_frame() + window_update_frame(0, 1 << 20) + request)
    stream = client.response(stream_id)
    assert stream.status == 200 and bytes(stream.data) == INDEX_BODY


def test_invalid_preface_after_request_line(target):
    """
    "PRI * HTTP/2.0" followed by a wrong rest of the preface: connection error PROTOCOL_ERROR
    (GOAWAY PROTOCOL_ERROR, then close).
    """
    client = target.connect(handshake=False)
    client.send_raw(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + settings_frame())
    data = read_to_close(client, 5)
    assert goaway_codes(data) == [ErrorCodes.PROTOCOL_ERROR], data


def test_invalid_preface_garbage(target):
    """
    Not a preface at all: connection error PROTOCOL_ERROR where the GOAWAY MAY be omitted (RFC 9113
    section 3.4). The connection closes; a GOAWAY, if any, says PROTOCOL_ERROR (an HTTP/1.1 refusal
    is fine too: the peer does not speak HTTP/2).
    """
    client = target.connect(handshake=False)
    client.send_raw(b"INVALID CONNECTION PREFACE\r\n\r\n" + settings_frame())
    data = read_to_close(client, 5)
    if not data.startswith(b"HTTP/1.1 "):
        assert all(code == ErrorCodes.PROTOCOL_ERROR for code in goaway_codes(data)), data


def test_preface_then_non_settings_frame(target):
    """The first frame after the preface must be SETTINGS: a PING instead is a connection error PROTOCOL_ERROR."""
    client = target.connect(handshake=False)
    client.send_raw(PREFACE + ping_frame(client.new_marker()))
    expect_connection_error(client, ErrorCodes.PROTOCOL_ERROR)


def test_preface_without_settings_times_out(target):
    """
    Preface but no SETTINGS: after ``header_timeout`` the server ends the connection with GOAWAY
    (PROTOCOL_ERROR or SETTINGS_TIMEOUT) and closes it.
    """
    server = target.variant(header_timeout=SHORT_TIMEOUT)
    started = time.monotonic()
    client = target.connect(server, handshake=False)
    client.send_raw(PREFACE)
    data = read_to_close(client, SHORT_TIMEOUT + 5)
    assert time.monotonic() - started >= SHORT_TIMEOUT, "closed before header_timeout"
    codes = goaway_codes(data)
    assert codes and codes[-1] in (ErrorCodes.PROTOCOL_ERROR, ErrorCodes.SETTINGS_TIMEOUT), data


def test_partial_preface_times_out(target):
    """Half a preface and then silence: closed after ``header_timeout`` (slowloris on the preface)."""
    server = target.variant(header_timeout=SHORT_TIMEOUT)
    client = target.connect(server, handshake=False)
    client.send_raw(PREFACE[:10])
    data = read_to_close(client, SHORT_TIMEOUT + 5)
    assert all(code == ErrorCodes.PROTOCOL_ERROR for code in goaway_codes(data)), data
