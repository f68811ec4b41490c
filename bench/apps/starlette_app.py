"""The benchmark app as a Starlette app: the same routes and bodies as ``asgi_app``."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

HELLO = "Hello, world!\n"
BIG = b"x" * (1024 * 1024)


async def index(request: Request) -> Response:
    return PlainTextResponse(HELLO)


async def big(request: Request) -> Response:
    return Response(BIG, media_type="application/octet-stream")


async def upload(request: Request) -> Response:
    # Counts the body as it arrives, like the other apps, without keeping it.
    length = 0
    async for chunk in request.stream():
        length += len(chunk)
    return PlainTextResponse(str(length))


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                await websocket.send_bytes(message["bytes"])
            else:
                await websocket.send_text(message["text"])
    except WebSocketDisconnect:
        return


app = Starlette(
    routes=[
        Route("/", index),
        Route("/big", big),
        Route("/upload", upload, methods=["POST"]),
        WebSocketRoute("/ws", echo),
    ]
)
