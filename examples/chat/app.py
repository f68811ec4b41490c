"""
A chat over WebSockets: ``/`` is the page, ``/ws/<room>`` the WebSocket of a room; every text
message sent to a room goes to everyone in it, the sender included. Run from this folder with
``asphalt run config.yml`` and open https://localhost:4444/ in two browser tabs.

Over HTTP/2 (as browsers reach this config) the WebSocket shares the page's connection as one
more stream (RFC 8441); over HTTP/1.1 it takes a connection of its own. The handler is the same.
"""

import asyncio
from collections import defaultdict
from pathlib import Path

from kyoukai import Kyoukai, WebSocket, WebSocketDisconnect
from kyoukai.util import as_html

app = Kyoukai("chat")

PAGE = (Path(__file__).parent / "index.html").read_text()
#: Longest message passed on, in characters (the server's ws_max_message_size bounds what arrives).
MAX_MESSAGE = 2000

#: The WebSockets in each room.
rooms: defaultdict[str, set[WebSocket]] = defaultdict(set)


@app.route("/")
async def index(ctx):
    return as_html(PAGE)


@app.websocket("/ws/<room>")
async def chat(ctx, room: str):
    websocket = ctx.websocket
    await websocket.accept()
    members = rooms[room]
    members.add(websocket)
    try:
        async for message in websocket:
            if isinstance(message, str):
                await broadcast(members, message[:MAX_MESSAGE])
    finally:
        # The loop ends when this member leaves (or the server stops): the room forgets it.
        members.discard(websocket)
        if not members:
            rooms.pop(room, None)


async def broadcast(members: set[WebSocket], text: str) -> None:
    """Send ``text`` to every member at once: one slow reader does not hold up the others."""
    await asyncio.gather(*(_send(member, text) for member in list(members)))


async def _send(member: WebSocket, text: str) -> None:
    try:
        await member.send(text)
    except WebSocketDisconnect:
        pass  # that member is leaving; its own handler takes it out of the room
