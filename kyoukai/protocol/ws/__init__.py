"""
The WebSocket core, without I/O: the opening handshake of RFC 6455 (HTTP/1.1 Upgrade) and
RFC 8441 (HTTP/2 extended CONNECT), and a session that turns frames into messages on wsproto
(whole data frames on a fast path of its own, :mod:`kyoukai.protocol.ws.frames`).
"""
