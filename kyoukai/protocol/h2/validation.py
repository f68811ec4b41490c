"""
Validation of HTTP/2 request header blocks (RFC 9113 sections 8.1.1, 8.2 and 8.3, and the
extended CONNECT of RFC 8441 section 4), in one pass over the fields.

It replaces h2's inbound validation, which checks the same rules in a chain of generators, and
which reports a malformed request as a connection error where RFC 9113 asks for a stream error
(RST_STREAM PROTOCOL_ERROR): one bad request must not end the client's other streams.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Iterable
from itertools import chain
from typing import NamedTuple

from kyoukai.protocol.fields import CONNECTION_SPECIFIC, content_length, is_valid_host

#: Field names: no controls, space, uppercase, DEL or non-ASCII, no colon (RFC 9113 8.2.1).
_valid_name = re.compile(rb"[^\x00-\x20A-Z\x7f-\xff:]+").fullmatch
#: Field values: no NUL, CR or LF; no whitespace at either end (RFC 9113 8.2.1).
_valid_value = re.compile(rb"(?:[^\x00\r\n\t ](?:[^\x00\r\n]*[^\x00\r\n\t ])?)?").fullmatch

#: A method is a token (RFC 9110 9.1).
_valid_method = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
#: What a request target never holds: whitespace, controls, DEL (RFC 9112 3.2), a fragment.
_not_in_path = re.compile(rb"[\x00-\x20\x7f#]").search

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


class RequestHead(NamedTuple):
    """What the core needs to know of a request header block (see :func:`inspect_request`)."""

    #: What makes the block malformed, or ``None`` if it is valid (then the fields below hold).
    problem: str | None
    #: The value of the ``content-length`` field(s), as an int.
    content_length: int | None = None
    #: How many regular (not pseudo-header) fields the block has.
    regular_fields: int = 0
    #: The ``:protocol`` of an extended CONNECT (RFC 8441), or ``None``.
    protocol: bytes | None = None


def _inspect(headers: list[tuple[bytes, bytes]], ended: bool) -> RequestHead:
    pseudo: dict[bytes, bytes] = {}
    regular = 0
    host = None
    first_length = None
    for name, value in headers:
        if name[:1] == b":":
            if regular:
                return RequestHead(f"pseudo-header {name!r} after a regular field")
            if name not in _REQUEST_PSEUDO:
                return RequestHead(f"pseudo-header {name!r} is not allowed in a request")
            if name in pseudo:
                return RequestHead(f"duplicate pseudo-header {name!r}")
            if not _valid_value(value):
                return RequestHead(f"invalid value of {name!r}")
            pseudo[name] = value
            continue
        regular += 1
        problem = _check_field(name, value)
        if problem is not None:
            return RequestHead(problem)
        if name == b"te" and value.lower() != b"trailers":
            return RequestHead("te field other than 'trailers'")
        if name == b"host":
            host = value
        elif name == b"content-length":
            # 1*DIGIT (RFC 9110 8.6); several fields only if they agree.
            if not value.isdigit():
                return RequestHead(f"content-length {value[:32]!r} is not a decimal number")
            if first_length is not None and value.lstrip(b"0") != first_length.lstrip(b"0"):
                return RequestHead("content-length fields that differ")
            if first_length is None:
                first_length = value
    method = pseudo.get(b":method")
    if method is None:
        return RequestHead("no :method")
    if not _valid_method(method):
        return RequestHead(f":method {method[:32]!r} is not a token")
    protocol = pseudo.get(b":protocol")
    if protocol is not None and method != b"CONNECT":
        return RequestHead(f":protocol in a {method[:16]!r} request (only an extended CONNECT carries it)")
    if method == b"CONNECT" and protocol is None:
        if b":scheme" in pseudo or b":path" in pseudo or b":authority" not in pseudo:
            return RequestHead("CONNECT needs :authority and no :scheme or :path")
    else:
        # A request, or an extended CONNECT (RFC 8441 section 4), which names its resource the
        # same way and needs :authority too.
        if method == b"CONNECT" and b":authority" not in pseudo:
            return RequestHead("an extended CONNECT needs :authority")
        if b":scheme" not in pseudo:
            return RequestHead("no :scheme")
        path = pseudo.get(b":path")
        if not path:
            return RequestHead("no :path" if path is None else "empty :path")
        # Origin-form, or asterisk-form for OPTIONS (RFC 9113 8.3.1). Kyoukai serves http and
        # https only, so no other :scheme earns other forms: a path like "admin" would reach
        # the router as /admin past hooks that look at PATH_INFO.
        if path[:1] != b"/" and (path != b"*" or method != b"OPTIONS"):
            return RequestHead(f":path {path[:64]!r} is neither origin-form nor '*' with OPTIONS")
        if _not_in_path(path):
            return RequestHead(f":path {path[:64]!r} has whitespace, a control character or a fragment")
    authority = pseudo.get(b":authority")
    if host is not None and authority is not None and host != authority:
        return RequestHead("host differs from :authority")
    # (No userinfo, RFC 9113 8.3.1; the Host rules of HTTP/1.1 otherwise.)
    named = authority if authority is not None else host
    if named is not None and not is_valid_host(named):
        return RequestHead(f"invalid :authority or host {named[:64]!r}")
    if ended and first_length is not None and first_length.strip(b"0"):
        # (All content-length fields agree by now: the first says it.)
        return RequestHead(f"content-length {first_length!r} on a request without a body")
    length = None if first_length is None else content_length(first_length)
    return RequestHead(None, length, regular, protocol)


#: Verdicts on recent small header blocks: clients repeat theirs (every field in the HPACK
#: table, the same bytes decoded each time), so most requests are checked by one lookup.
_seen: dict[tuple, RequestHead] = {}
#: The most verdicts kept (the lot is forgotten when full), and the largest block kept.
MEMO_ENTRIES = 256
MEMO_MAX_FIELDS = 24
MEMO_MAX_BYTES = 4096


def inspect_request(headers: list[tuple[bytes, bytes]], ended: bool = False) -> RequestHead:
    """
    Check a request header block in one pass (see :class:`RequestHead`). ``ended``: the HEADERS
    frame carried END_STREAM (so there is no body to match a content-length).
    """
    if len(headers) > MEMO_MAX_FIELDS:
        return _inspect(headers, ended)
    key = (ended, *headers)
    head = _seen.get(key)
    if head is None:
        head = _inspect(headers, ended)
        if sum(map(len, chain.from_iterable(headers))) <= MEMO_MAX_BYTES:
            if len(_seen) >= MEMO_ENTRIES:
                _seen.clear()
            _seen[key] = head
    return head


def check_trailers(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """What makes this trailer block malformed, or ``None`` if it is valid."""
    for name, value in headers:
        problem = f"pseudo-header {name!r}" if name[:1] == b":" else _check_field(name, value)
        if problem is not None:
            return problem + " in trailers"
    return None


#: An ``HTTP2-Settings`` value: base64url (RFC 4648 section 5), its padding optional.
_base64url = re.compile(r"[A-Za-z0-9_-]*={0,2}").fullmatch
_SETTING = struct.Struct("!HL")


def http2_settings_problem(value: str) -> str | None:
    """
    What is wrong with the ``HTTP2-Settings`` of an h2c upgrade request (RFC 7540 section
    3.2.1: the payload of a SETTINGS frame in base64url), or ``None``: not base64url, not
    whole settings, or a value RFC 9113 section 6.5.2 rules out. The server answers such a
    request over HTTP/1.1 instead of switching to a connection that would fail at once.
    """
    text = value.strip()
    if not _base64url(text):
        return "not base64url"
    try:
        payload = base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))
    except (binascii.Error, ValueError):
        return "not base64url"
    if len(payload) % _SETTING.size:
        return f"{len(payload)} bytes, not whole settings of 6 bytes each"
    for setting, number in _SETTING.iter_unpack(payload):
        if setting in (0x2, 0x8) and number > 1:  # ENABLE_PUSH, ENABLE_CONNECT_PROTOCOL
            return f"setting {setting} is {number}, not 0 or 1"
        if setting == 0x4 and number > 0x7FFFFFFF:  # INITIAL_WINDOW_SIZE
            return f"an initial window of {number}, over 2^31-1"
        if setting == 0x5 and not 0x4000 <= number <= 0xFFFFFF:  # MAX_FRAME_SIZE
            return f"a maximum frame size of {number}, outside 2^14 to 2^24-1"
    return None
