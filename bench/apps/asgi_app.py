"""The benchmark app for Hypercorn: the same routes as ``kyoukai_app``, as plain ASGI."""

HELLO = b"Hello, world!\n"
BIG = b"x" * (1024 * 1024)

_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]
_BINARY = [(b"content-type", b"application/octet-stream")]


async def _respond(send, status: int, headers: list, body: bytes) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _read_body_length(receive) -> int:
    length = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        length += len(message.get("body", b""))
        more = message.get("more_body", False)
    return length


async def _echo(receive, send) -> None:
    """``/ws``: accept the WebSocket, send every message back as it came (text or binary)."""
    while True:
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif message["type"] == "websocket.receive":
            if message.get("bytes") is not None:
                await send({"type": "websocket.send", "bytes": message["bytes"]})
            else:
                await send({"type": "websocket.send", "text": message["text"]})
        elif message["type"] == "websocket.disconnect":
            return


async def app(scope, receive, send) -> None:
    if scope["type"] == "websocket":
        if scope["path"] == "/ws":
            await _echo(receive, send)
        else:
            await send({"type": "websocket.close", "code": 1008})
        return
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path, method = scope["path"], scope["method"]
    if path == "/" and method == "GET":
        await _respond(send, 200, _TEXT, HELLO)
    elif path == "/big" and method == "GET":
        await _respond(send, 200, _BINARY, BIG)
    elif path == "/upload" and method == "POST":
        await _respond(send, 200, _TEXT, str(await _read_body_length(receive)).encode())
    else:
        await _respond(send, 404, _TEXT, b"Not Found\n")
