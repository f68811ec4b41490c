"""
The benchmark app for Kyoukai: a small page, a 1 MiB download, an upload that counts bytes and a
WebSocket echo.
"""

from werkzeug.wrappers import Response

from kyoukai import Kyoukai

#: The body of ``GET /``.
HELLO = "Hello, world!\n"
#: The body of ``GET /big``: 1 MiB.
BIG = b"x" * (1024 * 1024)

app = Kyoukai("bench")


@app.route("/")
async def index(ctx):
    return HELLO


@app.route("/big")
async def big(ctx):
    return Response(BIG, content_type="application/octet-stream")


@app.route("/upload", methods=["POST"], stream_body=True)
async def upload(ctx):
    # Counts the body as it arrives, like the ASGI app does, without keeping it.
    length = 0
    async for chunk in ctx.request.stream:
        length += len(chunk)
    return str(length)


@app.websocket("/ws")
async def echo(ctx):
    # Every message back as it came, text or binary, until the client closes.
    async for message in ctx.websocket:
        await ctx.websocket.send(message)
