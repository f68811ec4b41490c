"""
Validation of HTTP/2 request header blocks (RFC 9113 sections 8.1.1, 8.2 and 8.3, and the
extended CONNECT of RFC 8441 section 4), in one pass over the fields.

It replaces h2's inbound validation, which checks the same rules in a chain of generators, and
which reports a malformed request as a connection error where RFC 9113 asks for a stream error
(RST_STREAM PROTOCOL_ERROR): one bad request must not end the client's other streams.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from kyoukai.protocol.fields import CONNECTION_SPECIFIC

#: Field names: no controls, space, uppercase, DEL or non-ASCII, no colon (RFC 9113 8.2.1).
_valid_name = re.compile(rb"[^\x00-\x20A-Z\x7f-\xff:]+").fullmatch
#: Field values: no NUL, CR or LF; no whitespace at either end (RFC 9113 8.2.1).
_valid_value = re.compile(rb"(?:[^\x00\r\n\t ](?:[^\x00\r\n]*[^\x00\r\n\t ])?)?").fullmatch

_REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path", b":protocol"})
#: The ``:protocol`` values of an extended CONNECT that this server speaks (RFC 8441 section 4).
SUPPORTED_PROTOCOLS = frozenset({b"websocket"})


def _check_field(name: bytes, value: bytes) -> str | None:
    """What is wrong with a regular (not pseudo-header) field, or ``None``."""
    if not _valid_name(name):
        return f"invalid field name {name!r}"
    if not _valid_value(value):
        return f"invalid value of field {name!r}"
    if name in CONNECTION_SPECIFIC:
        return f"connection-specific field {name!r}"
    return None


def check_request_headers(headers: Iterable[tuple[bytes, bytes]], ended: bool = False) -> str | None:
    """
    What makes this request header block malformed, or ``None`` if it is valid. ``ended``: the
    HEADERS frame carried END_STREAM (so there is no body to match a content-length).
    """
    pseudo: dict[bytes, bytes] = {}
    regular_seen = False
    host = None
    content_length = None
    for name, value in headers:
        if name[:1] == b":":
            if regular_seen:
                return f"pseudo-header {name!r} after a regular field"
            if name not in _REQUEST_PSEUDO:
                return f"pseudo-header {name!r} is not allowed in a request"
            if name in pseudo:
                return f"duplicate pseudo-header {name!r}"
            if not _valid_value(value):
                return f"invalid value of {name!r}"
            pseudo[name] = value
            continue
        regular_seen = True
        problem = _check_field(name, value)
        if problem is not None:
            return problem
        if name == b"te" and value.lower() != b"trailers":
            return "te field other than 'trailers'"
        if name == b"host":
            host = value
        elif name == b"content-length":
            content_length = value
    method = pseudo.get(b":method")
    if method is None:
        return "no :method"
    if b":protocol" in pseudo and method != b"CONNECT":
        return f":protocol in a {method[:16]!r} request (only an extended CONNECT carries it)"
    if method == b"CONNECT" and b":protocol" not in pseudo:
        if b":scheme" in pseudo or b":path" in pseudo or b":authority" not in pseudo:
            return "CONNECT needs :authority and no :scheme or :path"
    else:
        # A request, or an extended CONNECT (RFC 8441 section 4), which names its resource the
        # same way and needs :authority too.
        if method == b"CONNECT" and b":authority" not in pseudo:
            return "an extended CONNECT needs :authority"
        if b":scheme" not in pseudo:
            return "no :scheme"
        path = pseudo.get(b":path")
        if not path:
            return "no :path" if path is None else "empty :path"
        # Origin-form, or asterisk-form for OPTIONS (RFC 9113 8.3.1). Kyoukai serves http and
        # https only, so no other :scheme earns other forms: a path like "admin" would reach
        # the router as /admin past hooks that look at PATH_INFO.
        if path[:1] != b"/" and (path != b"*" or method != b"OPTIONS"):
            return f":path {path[:64]!r} is neither origin-form nor '*' with OPTIONS"
    authority = pseudo.get(b":authority")
    if host is not None and authority is not None and host != authority:
        return "host differs from :authority"
    if ended and content_length is not None and content_length.strip(b"0"):
        return f"content-length {content_length!r} on a request without a body"
    return None


def check_trailers(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """What makes this trailer block malformed, or ``None`` if it is valid."""
    for name, value in headers:
        problem = f"pseudo-header {name!r}" if name[:1] == b":" else _check_field(name, value)
        if problem is not None:
            return problem + " in trailers"
    return None


def connect_protocol(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """
    The ``:protocol`` of an extended CONNECT (RFC 8441), or ``None`` for any other request.
    Only the pseudo-headers at the start of a block :func:`check_request_headers` passed are read.
    """
    for name, value in headers:
        if name[:1] != b":":
            return None
        if name == b":protocol":
            return value
    return None
