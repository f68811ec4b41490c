"""TLS context creation, shared by every component."""

from __future__ import annotations

import ssl
from collections.abc import Sequence

#: TLS 1.2 cipher suites allowed by RFC 9113 section 9.2.2: ephemeral key exchange and AEAD
#: only. (TLS 1.3 suites are all acceptable and configured separately by OpenSSL.)
HTTP2_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL"


def create_server_context(
    certfile: str, keyfile: str | None = None, *, alpn_protocols: Sequence[str] = ("http/1.1",)
) -> ssl.SSLContext:
    """
    A server-side TLS context: TLS 1.2 or newer, RFC 9113 cipher rules, no compression, no
    renegotiation, and ALPN offering ``alpn_protocols`` in order of preference.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_ciphers(HTTP2_TLS12_CIPHERS)
    context.load_cert_chain(certfile=certfile, keyfile=keyfile)
    context.set_alpn_protocols(list(alpn_protocols))
    return context


def negotiated_protocol(transport) -> str | None:
    """The ALPN protocol chosen on a TLS transport, ``None`` on cleartext or without ALPN."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    return ssl_object.selected_alpn_protocol()
