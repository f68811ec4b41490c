"""
RFC 9113 section 8: HTTP semantics. Message framing and trailers (8.1), malformed messages and
content-length (8.1.1), field validity (8.2.1), connection-specific fields (8.2.2) and the
request pseudo-header fields (8.3). A malformed request is a stream error PROTOCOL_ERROR; like
h2spec we also accept a connection error PROTOCOL_ERROR. Either way a valid request is served
afterwards, on the same connection if it is still open, else on a new one.
"""

from __future__ import annotations

import pytest
from h2.errors import ErrorCodes

from .conftest import INDEX_BODY
from .h2conf import data_frame, expect_stream_error, headers_frame


def expect_malformed(target, client, stream_id: int) -> None:
    expect_stream_error(client, stream_id, ErrorCodes.PROTOCOL_ERROR)
    target.assert_serves(client)


def send_head(client, headers: list[tuple[str, str]], *, end_stream: bool = True, probe: bool = True) -> int:
    stream_id = client.next_id()
    chunk = headers_frame(stream_id, client.block(headers), end_stream=end_stream)
    if probe:
        client.send_with_probe(chunk)
    else:
        client.send_raw(chunk)
    return stream_id


def test_valid_request_control(target, client):
    """Control case: the standard request head is served."""
    stream = client.response(send_head(client, client.head("/"), probe=False))
    assert stream.status == 200 and bytes(stream.data) == INDEX_BODY


CONNECTION_SPECIFIC = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}


@pytest.mark.parametrize("path,method", [("/", "GET"), ("/large", "GET"), ("/missing", "GET"), ("/echo", "POST")])
def test_response_fields_are_valid(client, path, method):
    """
    Response header blocks: :status first and once, no other pseudo-header, lowercase names, no
    connection-specific fields (RFC 9113 sections 8.2 and 8.3.2).
    """
    client.auto_ack = True
    stream_id = send_head(client, client.head(path, method), probe=False)
    stream = client.response(stream_id)
    names = [n for n, _ in stream.headers]
    assert names[0] == ":status" and names.count(":status") == 1, names
    assert all(not n.startswith(":") for n in names[1:]), names
    assert all(n == n.lower() for n in names), names
    assert not CONNECTION_SPECIFIC & set(names), names


def test_head_response_has_no_content(client):
    """A HEAD response carries no content: no DATA with a payload."""
    stream = client.response(send_head(client, client.head("/", "HEAD"), probe=False))
    assert stream.status == 200 and stream.ended
    assert bytes(stream.data) == b""


# 8.1 HTTP message framing: trailers


def test_trailers_accepted(client):
    """HEADERS, DATA, then a trailer HEADERS with END_STREAM: a complete request."""
    stream_id = send_head(client, client.head("/echo", "POST"), end_stream=False, probe=False)
    client.send_raw(
        data_frame(stream_id, b"body") + headers_frame(stream_id, client.block([("x-trailer", "yes")]), end_stream=True)
    )
    stream = client.response(stream_id)
    assert stream.status == 200 and bytes(stream.data) == b"body"


def test_trailers_without_end_stream(target, client):
    """A second HEADERS frame (trailers) without END_STREAM: stream error PROTOCOL_ERROR."""
    stream_id = send_head(client, client.head("/echo", "POST"), end_stream=False, probe=False)
    client.send_raw(data_frame(stream_id, b"body"))
    client.send_with_probe(headers_frame(stream_id, client.block([("x-trailer", "yes")]), end_stream=False))
    expect_malformed(target, client, stream_id)


def test_trailers_with_pseudo_header(target, client):
    """Pseudo-header fields in trailers: malformed, stream error PROTOCOL_ERROR."""
    stream_id = send_head(client, client.head("/echo", "POST"), end_stream=False, probe=False)
    client.send_raw(data_frame(stream_id, b"body"))
    client.send_with_probe(headers_frame(stream_id, client.block([(":path", "/"), ("x-trailer", "yes")])))
    expect_malformed(target, client, stream_id)


# 8.1.1 malformed messages: content-length


@pytest.mark.parametrize(
    "length,chunks",
    [("1", [b"test"]), ("10", [b"test"]), ("10", [b"test", b"test"]), ("3", [b"te", b"st"])],
    ids=["shorter-one-frame", "longer-one-frame", "longer-two-frames", "shorter-two-frames"],
)
def test_content_length_mismatch(target, client, length, chunks):
    """content-length not equal to the sum of the DATA payload lengths: stream error PROTOCOL_ERROR."""
    stream_id = send_head(
        client, client.head("/echo", "POST", [("content-length", length)]), end_stream=False, probe=False
    )
    frames = [data_frame(stream_id, c) for c in chunks[:-1]] + [data_frame(stream_id, chunks[-1], end_stream=True)]
    client.send_with_probe(*frames)
    expect_malformed(target, client, stream_id)


def test_content_length_with_head_only_request(target, client):
    """content-length: 5 on a request that ends with its HEADERS (no DATA): stream error PROTOCOL_ERROR."""
    stream_id = send_head(client, client.head("/echo", "POST", [("content-length", "5")]))
    expect_malformed(target, client, stream_id)


@pytest.mark.parametrize(
    "values",
    [["abc"], ["-1"], ["+4"], [" 4"], ["0x4"], ["4, 4"], ["4", "5"], ["4 4"]],
    ids=["letters", "negative", "plus-sign", "leading-space", "hex", "list", "two-values", "inner-space"],
)
def test_content_length_not_a_length(target, client, values):
    """
    A content-length that is not one non-negative decimal number (RFC 9110 8.6), or two that
    differ: a malformed request, so a stream error PROTOCOL_ERROR (not the connection's, whatever
    h2's version thinks of the value), and the connection serves on.
    """
    fields = [("content-length", value) for value in values]
    stream_id = send_head(client, client.head("/echo", "POST", fields), end_stream=False, probe=False)
    client.send_with_probe(data_frame(stream_id, b"test", end_stream=True))
    reaction = client.await_reaction(stream_id, rounds=3)
    assert (reaction.kind, reaction.code) == ("rst", ErrorCodes.PROTOCOL_ERROR), str(reaction)
    target.assert_serves(client)


def test_content_length_of_thousands_of_digits(target, client):
    """Too many digits for int(): larger than any body limit, not an error of the connection."""
    fields = [("content-length", "9" * 5000)]
    stream_id = send_head(client, client.head("/echo", "POST", fields), end_stream=False, probe=False)
    client.send_with_probe(data_frame(stream_id, b"test", end_stream=True))
    reaction = client.await_reaction(stream_id, rounds=3)
    # The stream is answered (413) or reset, as the body's arrival and the answer cross.
    assert reaction.kind in ("rst", "ignored") and client.open, str(reaction)
    target.assert_serves(client)


def test_content_length_matching(client):
    """content-length equal to the DATA sent: the request is served."""
    stream_id = send_head(
        client, client.head("/echo", "POST", [("content-length", "8")]), end_stream=False, probe=False
    )
    client.send_raw(data_frame(stream_id, b"test") + data_frame(stream_id, b"test", end_stream=True))
    stream = client.response(stream_id)
    assert stream.status == 200 and bytes(stream.data) == b"testtest"


# 8.2 fields: names, values, connection-specific fields


def test_uppercase_field_name(target, client):
    """A field name with uppercase characters: malformed, stream error PROTOCOL_ERROR."""
    expect_malformed(target, client, send_head(client, client.head("/", extra=[("X-Test", "ok")])))


@pytest.mark.parametrize(
    "name,value",
    [
        ("x-test", "a\nb"),
        ("x-test", "a\rb"),
        ("x-test", "a\0b"),
        ("x-test", " leading"),
        ("x-test", "trailing\t"),
        ("x test", "ok"),
        ("x-test:", "ok"),
        ("", "empty-name"),
    ],
    ids=[
        "value-lf",
        "value-cr",
        "value-nul",
        "value-leading-space",
        "value-trailing-tab",
        "name-space",
        "name-colon",
        "name-empty",
    ],
)
def test_invalid_field(target, client, name, value):
    """RFC 9113 section 8.2.1: a field name or value with forbidden characters is malformed (PROTOCOL_ERROR)."""
    expect_malformed(target, client, send_head(client, client.head("/", extra=[(name, value)])))


@pytest.mark.parametrize(
    "name,value",
    [
        ("connection", "keep-alive"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "h2c"),
    ],
)
def test_connection_specific_field(target, client, name, value):
    """Connection-specific fields are malformed in HTTP/2: stream error PROTOCOL_ERROR."""
    expect_malformed(target, client, send_head(client, client.head("/", extra=[(name, value)])))


def test_te_other_than_trailers(target, client):
    """te with a value other than "trailers": stream error PROTOCOL_ERROR."""
    expect_malformed(target, client, send_head(client, client.head("/", extra=[("te", "trailers, deflate")])))


def test_te_trailers_accepted(client):
    """te: trailers is the one allowed value."""
    stream = client.response(send_head(client, client.head("/", extra=[("te", "trailers")]), probe=False))
    assert stream.status == 200 and bytes(stream.data) == INDEX_BODY


# 8.3 pseudo-header fields


def without(headers: list[tuple[str, str]], name: str) -> list[tuple[str, str]]:
    return [(n, v) for n, v in headers if n != name]


@pytest.mark.parametrize("name", [":method", ":scheme", ":path"])
def test_missing_pseudo_header(target, client, name):
    """A request without :method, :scheme or :path: stream error PROTOCOL_ERROR."""
    expect_malformed(target, client, send_head(client, without(client.head("/"), name)))


@pytest.mark.parametrize("name", [":method", ":scheme", ":path", ":authority"])
def test_duplicate_pseudo_header(target, client, name):
    """A pseudo-header field given twice: stream error PROTOCOL_ERROR."""
    head = client.head("/")
    value = dict(head)[name]
    expect_malformed(target, client, send_head(client, head[:-1] + [(name, value)] + head[-1:]))


def test_empty_path(target, client):
    """An empty :path for an http(s) URI: stream error PROTOCOL_ERROR."""
    head = [(n, "" if n == ":path" else v) for n, v in client.head("/")]
    expect_malformed(target, client, send_head(client, head))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (":path", "/#top"),
        (":path", "/a?q=1#top"),
        (":path", "/a b"),
        (":path", "/a\x7f"),
        (":method", "G ET"),
        (":authority", "user@127.0.0.1"),
        (":authority", "127.0.0.1/evil"),
    ],
    ids=["fragment", "fragment-after-query", "space", "del", "method-not-a-token", "userinfo", "slash"],
)
def test_request_target_not_a_uri(target, client, name, value):
    """
    A :path that is not an origin-form target (a fragment, whitespace, a control), a :method
    that is not a token, an :authority with userinfo (RFC 9113 8.3.1) or other than a host and
    port: a malformed request, stream error PROTOCOL_ERROR.
    """
    head = [(n, value if n == name else v) for n, v in client.head("/")]
    expect_malformed(target, client, send_head(client, head))


def test_unknown_pseudo_header(target, client):
    """An undefined pseudo-header field (:foo): stream error PROTOCOL_ERROR."""
    expect_malformed(target, client, send_head(client, client.head("/") + [(":foo", "bar")]))


def test_response_pseudo_header_in_request(target, client):
    """A response pseudo-header (:status) in a request: stream error PROTOCOL_ERROR."""
    expect_malformed(target, client, send_head(client, client.head("/") + [(":status", "200")]))


def test_pseudo_header_after_regular_field(target, client):
    """A pseudo-header field after a regular field: stream error PROTOCOL_ERROR."""
    head = client.head("/")
    expect_malformed(target, client, send_head(client, head[:2] + [("x-test", "ok")] + head[2:]))


def test_connect_with_path(target, client):
    """A CONNECT request must omit :scheme and :path (RFC 9113 section 8.5); with them it is malformed."""
    head = [(n, "CONNECT" if n == ":method" else v) for n, v in client.head("/")]
    expect_malformed(target, client, send_head(client, head))


def test_authority_optional_with_host(client):
    """:authority may be omitted when a host field is given: the request is served."""
    head = without(client.head("/"), ":authority") + [("host", "127.0.0.1")]
    stream = client.response(send_head(client, head, probe=False))
    assert stream.status == 200 and bytes(stream.data) == INDEX_BODY


def test_host_and_authority_equal(client):
    """A host field equal to :authority is fine."""
    stream = client.response(send_head(client, client.head("/", extra=[("host", "127.0.0.1")]), probe=False))
    assert stream.status == 200 and bytes(stream.data) == INDEX_BODY


def test_host_differs_from_authority(target, client):
    """
    A host field naming another entity than :authority: a server SHOULD treat the request as
    malformed (RFC 9113 section 8.3.1), a stream error PROTOCOL_ERROR.
    """
    expect_malformed(target, client, send_head(client, client.head("/", extra=[("host", "example.com")])))
