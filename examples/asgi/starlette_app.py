"""
A Starlette app served by Kyoukai's engines: ``kyoukai run examples.asgi.starlette_app:app``
(from the repository root), or ``asphalt run examples/asgi/config.yml``.
"""

import contextlib

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket


# [lifespan]
@contextlib.asynccontextmanager
async def lifespan(app: Starlette):
    # Runs before the server listens; what it yields is every request's request.state.
    visits = {"count": 0}
    yield {"visits": visits}
    # Runs once the server has stopped and the requests in progress are answered.
    print(f"served {visits['count']} visits", flush=True)


# [lifespan-end]


async def homepage(request: Request) -> PlainTextResponse:
    visits = request.state.visits

    async def count() -> None:
        visits["count"] += 1

    text = f"Hello from Starlette on Kyoukai over HTTP/{request.scope['http_version']}!\n"
    # The background task runs after the response went out.
    return PlainTextResponse(text, background=BackgroundTask(count))


async def visits(request: Request) -> JSONResponse:
    return JSONResponse({"visits": request.state.visits["count"]})


# [streaming]
async def countdown(request: Request) -> StreamingResponse:
    start = int(request.query_params.get("from", "3"))

    async def lines():
        for n in range(start, 0, -1):
            yield f"{n}\n"  # each line is sent when the client can take it
        yield "lift-off\n"

    return StreamingResponse(lines(), media_type="text/plain")


async def upload(request: Request) -> JSONResponse:
    size = 0
    async for chunk in request.stream():  # the body as it arrives, within max_body_size
        size += len(chunk)
    return JSONResponse({"received": size})


# [streaming-end]


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    async for message in websocket.iter_text():
        await websocket.send_text(message)


app = Starlette(
    routes=[
        Route("/", homepage),
        Route("/visits", visits),
        Route("/countdown", countdown),
        Route("/upload", upload, methods=["POST"]),
        WebSocketRoute("/echo", echo),
    ],
    lifespan=lifespan,
)
