"""
Server-sent events: a response that never ends, produced by an async generator. Every client
of ``GET /events`` gets each message posted to ``POST /messages``. Run from this folder with
``asphalt run config.yml`` and open http://127.0.0.1:4444/ in two browser tabs, or::

    curl -N http://127.0.0.1:4444/events
    curl -d text=hello http://127.0.0.1:4444/messages
"""

import asyncio
import json
import weakref

from asphalt.core import Context
from werkzeug.exceptions import BadRequest
from werkzeug.wrappers import Response

from kyoukai import Kyoukai
from kyoukai.util import as_html, as_json

app = Kyoukai("sse")

#: Seconds between keep-alive comments on an idle stream (they also reveal clients that left).
HEARTBEAT = 15.0
#: Messages queued for one slow client before it starts missing them.
BACKLOG = 100

# One queue per connected client; None in it ends the client's stream.
listeners: set[asyncio.Queue] = set()
# The server contexts whose teardown ends the streams (see end_streams_on_stop).
_watched: weakref.WeakSet[Context] = weakref.WeakSet()

PAGE = """<!doctype html>
<title>Server-sent events</title>
<form id="send"><input name="text" autofocus> <button>Send</button></form>
<ul id="log"></ul>
<script>
  const log = document.getElementById("log");
  new EventSource("/events").addEventListener("message", (event) => {
    const item = document.createElement("li");
    item.textContent = JSON.parse(event.data).text;
    log.append(item);
  });
  document.getElementById("send").addEventListener("submit", (event) => {
    event.preventDefault();
    fetch("/messages", {method: "POST", body: new FormData(event.target)});
    event.target.reset();
  });
</script>
"""


@app.route("/")
async def index(ctx):
    return as_html(PAGE)


def end_streams_on_stop(ctx) -> None:
    """
    End every event stream when the server begins to stop. The streams never end by
    themselves, so a stopping server would wait ``shutdown_timeout`` for them and then cut
    them; ended, they let it stop at once, and browsers reconnect (to the next server) by
    themselves. The server's context runs its teardown callbacks last added first: this one
    runs before the server stops.
    """
    server_context = ctx.app.component.base_context
    if server_context not in _watched:
        _watched.add(server_context)
        server_context.add_teardown_callback(_end_streams)


def _end_streams() -> None:
    for queue in listeners:
        if queue.full():
            queue.get_nowait()  # a slow client loses its oldest message, not the end
        queue.put_nowait(None)


@app.route("/events")
async def events(ctx):
    end_streams_on_stop(ctx)
    queue: asyncio.Queue = asyncio.Queue(BACKLOG)

    # The generator runs after the handler has returned, while the response is being sent;
    # it stops (GeneratorExit or CancelledError) when the client goes away.
    async def stream():
        listeners.add(queue)
        try:
            yield ": connected\n\n"
            while True:
                try:
                    message = await asyncio.wait_for(queue.get(), HEARTBEAT)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if message is None:
                    return  # the server is stopping
                yield f"event: message\ndata: {json.dumps(message)}\n\n"
        finally:
            listeners.discard(queue)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return Response(stream(), content_type="text/event-stream", headers=headers)


@app.route("/messages", methods=["POST"])
async def post_message(ctx):
    text = ctx.request.form.get("text", "").strip()
    if not text:
        raise BadRequest("Post a non-empty form field 'text'.")
    delivered = 0
    for queue in listeners:
        if not queue.full():
            queue.put_nowait({"text": text})
            delivered += 1
    return as_json({"delivered": delivered}, 202)
