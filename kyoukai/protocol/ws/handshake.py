"""
The WebSocket opening handshake, as pure functions: :func:`check_upgrade_request` (HTTP/1.1,
RFC 6455 section 4.2.1) and :func:`check_connect_request` (HTTP/2 extended CONNECT, RFC 8441
section 4) read a request's header fields into a :class:`WebSocketOffer` or a precise
:class:`HandshakeRejection`; :func:`negotiate_deflate` agrees on permessage-deflate (RFC 7692);
:func:`accept_headers` makes the response that opens the WebSocket.
"""

from __future__ import annotations

import binascii
import re
from base64 import b64decode
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from wsproto.utilities import generate_accept_token

from kyoukai.protocol.ws.deflate import CLIENT_WINDOW_BITS, SERVER_WINDOW_BITS, DeflateParameters

WEBSOCKET_VERSION = "13"
_token = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
#: A window size in an RFC 7692 parameter: 8 to 15, no leading zero.
_window_bits = re.compile(r"[89]|1[0-5]").fullmatch
_DEFLATE_PARAMETERS = frozenset(
    {"server_no_context_takeover", "client_no_context_takeover", "server_max_window_bits", "client_max_window_bits"}
)


@dataclass(frozen=True, slots=True)
class WebSocketOffer:
    """A valid opening handshake: what the client offered."""

    #: The ``Sec-WebSocket-Key`` (HTTP/1.1); ``None`` on HTTP/2, which has none.
    key: str | None
    #: The subprotocols offered (``Sec-WebSocket-Protocol``), in the client's order.
    subprotocols: tuple[str, ...]
    #: The extension offers (``Sec-WebSocket-Extensions``), one element each, as sent.
    extensions: tuple[str, ...]
    #: Whether the request is an HTTP/2 extended CONNECT.
    http2: bool


@dataclass(frozen=True, slots=True)
class HandshakeRejection:
    """An opening handshake refused: the response to send instead."""

    status: int
    #: What was wrong, for the response body and the log.
    reason: str
    #: Fields the response must carry (``Upgrade`` with 426, ``Allow`` with 405...).
    headers: tuple[tuple[str, str], ...] = ()


def check_upgrade_request(
    method: str, headers: Iterable[tuple[str, str]], http_version: str = "1.1"
) -> WebSocketOffer | HandshakeRejection:
    """
    Read an HTTP/1.1 request that should open a WebSocket. The refusals, checked in this
    order: 426 with ``Upgrade: websocket`` when it does not ask for a WebSocket; 405 for a
    method other than GET; 400 for HTTP/1.0, a ``Connection`` without ``upgrade``; 426 with
    ``Sec-WebSocket-Version: 13`` for another version or none; 400 for a key that is not one
    base64-encoded 16-byte value, a subprotocol that is not a token.

    :param method: the request method.
    :param headers: the header fields, as ``str`` pairs (latin-1, as the HTTP/1.1 core gives them).
    :param http_version: the request's HTTP version, ``"1.1"`` or ``"1.0"``...
    """
    upgrade: list[str] = []
    connection: list[str] = []
    versions: list[str] = []
    keys: list[str] = []
    protocols: list[str] = []
    extensions: list[str] = []
    for name, value in headers:
        name = name.lower()
        if name == "upgrade":
            upgrade += _list_elements(value)
        elif name == "connection":
            connection += _list_elements(value)
        elif name == "sec-websocket-version":
            versions.append(value.strip())
        elif name == "sec-websocket-key":
            keys.append(value.strip())
        elif name == "sec-websocket-protocol":
            protocols += _list_elements(value)
        elif name == "sec-websocket-extensions":
            extensions += _list_elements(value)
    if "websocket" not in (token.lower() for token in upgrade):
        return HandshakeRejection(
            426,
            "This resource speaks WebSocket only: send a GET with 'Upgrade: websocket' (RFC 6455).",
            (("Upgrade", "websocket"), ("Connection", "Upgrade")),
        )
    if method != "GET":
        return HandshakeRejection(405, f"A WebSocket handshake is a GET request, not {method}.", (("Allow", "GET"),))
    if _version_tuple(http_version) < (1, 1):
        return HandshakeRejection(400, f"A WebSocket handshake needs HTTP/1.1, not HTTP/{http_version}.")
    if "upgrade" not in (token.lower() for token in connection):
        return HandshakeRejection(400, "The Connection header of a WebSocket handshake must list 'upgrade'.")
    if versions != [WEBSOCKET_VERSION]:
        seen = ", ".join(versions) if versions else "none"
        return HandshakeRejection(
            426,
            f"Sec-WebSocket-Version must be {WEBSOCKET_VERSION} (RFC 6455), not {seen}.",
            (("Sec-WebSocket-Version", WEBSOCKET_VERSION),),
        )
    if len(keys) != 1 or not _is_valid_key(keys[0]):
        if len(keys) == 1:
            seen = repr(keys[0][:64])
        else:
            seen = f"{len(keys)} of them" if keys else "none"
        return HandshakeRejection(400, f"Sec-WebSocket-Key must be one base64-encoded 16-byte value, not {seen}.")
    problem = _bad_subprotocol(protocols)
    if problem is not None:
        return HandshakeRejection(400, problem)
    return WebSocketOffer(keys[0], tuple(protocols), tuple(extensions), http2=False)


def check_connect_request(headers: Iterable[tuple[bytes, bytes]]) -> WebSocketOffer | HandshakeRejection:
    """
    Read an HTTP/2 request that should open a WebSocket: an extended CONNECT (RFC 8441).
    Every refusal is a 400 (426 needs ``Upgrade``, which HTTP/2 does not have): not a CONNECT,
    no ``:protocol`` or another than ``websocket``, no ``:scheme``, ``:path`` or
    ``:authority``, a ``sec-websocket-version`` other than 13 (named in the response), a
    subprotocol that is not a token. A ``sec-websocket-key`` is ignored.

    :param headers: the header block, pseudo-headers included, as ``bytes`` pairs (as the
        HTTP/2 core gives them).
    """
    pseudo: dict[bytes, bytes] = {}
    versions: list[str] = []
    protocols: list[str] = []
    extensions: list[str] = []
    for raw_name, raw_value in headers:
        if raw_name[:1] == b":":
            pseudo[raw_name] = raw_value
            continue
        name, value = raw_name.lower(), raw_value.decode("latin-1")
        if name == b"sec-websocket-version":
            versions.append(value.strip())
        elif name == b"sec-websocket-protocol":
            protocols += _list_elements(value)
        elif name == b"sec-websocket-extensions":
            extensions += _list_elements(value)
    method = pseudo.get(b":method", b"").decode("latin-1")
    if method != "CONNECT":
        return HandshakeRejection(
            400, f"A WebSocket over HTTP/2 opens with an extended CONNECT (RFC 8441), not {method or 'no method'}."
        )
    protocol = pseudo.get(b":protocol")
    if protocol is None:
        return HandshakeRejection(400, "A CONNECT without :protocol does not open a WebSocket (RFC 8441).")
    if protocol.lower() != b"websocket":
        return HandshakeRejection(400, f":protocol must be 'websocket', not {protocol.decode('latin-1')!r}.")
    missing = [name.decode() for name in (b":scheme", b":path", b":authority") if not pseudo.get(name)]
    if missing:
        return HandshakeRejection(
            400, f"An extended CONNECT needs :scheme, :path and :authority (RFC 8441); missing {', '.join(missing)}."
        )
    if versions != [WEBSOCKET_VERSION]:
        seen = ", ".join(versions) if versions else "none"
        return HandshakeRejection(
            400,
            f"sec-websocket-version must be {WEBSOCKET_VERSION} (RFC 6455), not {seen}.",
            (("sec-websocket-version", WEBSOCKET_VERSION),),
        )
    problem = _bad_subprotocol(protocols)
    if problem is not None:
        return HandshakeRejection(400, problem)
    return WebSocketOffer(None, tuple(protocols), tuple(extensions), http2=True)


def accept_headers(
    offer: WebSocketOffer, *, subprotocol: str | None = None, deflate: DeflateParameters | None = None
) -> tuple[int, list[tuple[str, str]]]:
    """
    The status and header fields of the response that opens the WebSocket: ``101`` with the
    ``Sec-WebSocket-Accept`` token on HTTP/1.1, ``200`` on HTTP/2 (no key, no token).

    :param subprotocol: the subprotocol chosen, one of ``offer.subprotocols``.
    :param deflate: the permessage-deflate agreement, from :func:`negotiate_deflate`.
    :raises ValueError: naming the subprotocol and those offered when it was not offered.
    """
    if subprotocol is not None and subprotocol not in offer.subprotocols:
        raise ValueError(
            f"subprotocol {subprotocol!r} was not offered by the client, which offered {list(offer.subprotocols)}"
        )
    fields: list[tuple[str, str]] = []
    if offer.key is not None:
        accept = generate_accept_token(offer.key.encode("ascii")).decode("ascii")
        fields += [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", accept)]
    if subprotocol is not None:
        fields.append(("Sec-WebSocket-Protocol", subprotocol))
    if deflate is not None:
        fields.append(("Sec-WebSocket-Extensions", deflate.header_value()))
    if offer.http2:
        return 200, [(name.lower(), value) for name, value in fields]
    return 101, fields


def negotiate_deflate(offers: Sequence[str]) -> DeflateParameters | None:
    """
    Agree on permessage-deflate: the first ``permessage-deflate`` offer among ``offers`` (the
    elements of ``Sec-WebSocket-Extensions``) that is well-formed and that we can honour, or
    ``None``. A malformed offer is declined, never a reason to fail the handshake.

    Our choices: the client's ``*_no_context_takeover`` requests are granted; our window is
    at most :data:`~.deflate.SERVER_WINDOW_BITS` bits (less if the client asks; an offer of 8
    is declined, zlib cannot honour it); a client that offers ``client_max_window_bits`` is
    asked for at most :data:`~.deflate.CLIENT_WINDOW_BITS`.
    """
    for offer in offers:
        name, *items = _split_outside_quotes(offer, ";")
        if name.strip().lower() != "permessage-deflate":
            continue
        params = _deflate_params(items)
        if params is None or params.get("server_max_window_bits") == "8":
            continue
        server_bits = min(int(params.get("server_max_window_bits") or 15), SERVER_WINDOW_BITS)
        client_bits = None
        if "client_max_window_bits" in params:
            client_bits = min(int(params["client_max_window_bits"] or 15), CLIENT_WINDOW_BITS)
        return DeflateParameters(
            server_no_context_takeover="server_no_context_takeover" in params,
            client_no_context_takeover="client_no_context_takeover" in params,
            server_max_window_bits=server_bits,
            client_max_window_bits=client_bits,
        )
    return None


def _deflate_params(items: list[str]) -> dict[str, str | None] | None:
    """The parameters of a permessage-deflate offer by name, or ``None`` if it is malformed (RFC 7692 section 7)."""
    params: dict[str, str | None] = {}
    for item in items:
        name, equals, value = (part.strip() for part in item.partition("="))
        if name not in _DEFLATE_PARAMETERS or name in params:
            return None
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if name.endswith("_no_context_takeover"):
            if equals:
                return None
            params[name] = None
        elif equals:
            if not _window_bits(value):
                return None
            params[name] = value
        elif name == "client_max_window_bits":
            params[name] = None
        else:
            return None
    return params


def _list_elements(value: str) -> list[str]:
    """The non-empty elements of a comma-separated field value (RFC 9110 section 5.6.1)."""
    return [element for element in (part.strip() for part in _split_outside_quotes(value, ",")) if element]


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    """``text`` split at ``separator``, except inside double quotes (backslash escapes honoured)."""
    parts: list[str] = []
    start = 0
    quoted = escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def _is_valid_key(key: str) -> bool:
    try:
        return len(b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def _bad_subprotocol(protocols: list[str]) -> str | None:
    for protocol in protocols:
        if not _token(protocol):
            return f"Sec-WebSocket-Protocol offers {protocol[:64]!r}, which is not a token (RFC 6455 section 4.1)."
    return None


def _version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (0,)
