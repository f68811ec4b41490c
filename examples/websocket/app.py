"""WebSocket routes: an echo, a subprotocol choice and closing with a code, and authentication by a hook."""

from werkzeug.exceptions import Forbidden

from kyoukai import Kyoukai, WebSocketDisconnect

app = Kyoukai("websocket")


# [echo]
@app.websocket("/echo")
async def echo(ctx):
    async for message in ctx.websocket:  # str for text frames, bytes for binary ones
        await ctx.websocket.send(message)


# [echo-end]


# [protocols]
@app.websocket("/versions")
async def versions(ctx):
    ws = ctx.websocket
    # Choose one of the subprotocols the client offered, or none.
    chosen = "v2" if "v2" in ws.subprotocols else None
    await ws.accept(subprotocol=chosen)
    await ws.send(f"speaking {ws.subprotocol or 'no subprotocol'}")
    try:
        while True:
            text = await ws.receive()
            if text == "bye":
                await ws.close(4000, "asked to leave")
                return
            await ws.send(text.upper())
    except WebSocketDisconnect as e:
        app.config.setdefault("disconnects", []).append(e.code)


# [protocols-end]


# [auth]
@app.before_request
async def require_token(ctx):
    # Hooks run for the handshake request too: a refusal here is an HTTP 403 to the client.
    if ctx.request.path.startswith("/private") and ctx.request.args.get("token") != "secret":
        raise Forbidden("a token is needed")
    return ctx


@app.websocket("/private/feed")
async def private_feed(ctx):
    await ctx.websocket.send("welcome")
    # Returning closes the WebSocket with 1000.


# [auth-end]
