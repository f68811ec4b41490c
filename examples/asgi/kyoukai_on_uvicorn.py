"""
A Kyoukai app served by an ASGI server: ``uvicorn examples.asgi.kyoukai_on_uvicorn:asgi``
(or Hypercorn, granian...).
"""

from kyoukai import Kyoukai

app = Kyoukai("on_uvicorn")


@app.route("/")
async def index(ctx):
    return "Hello from Kyoukai on an ASGI server!\n"


@app.route("/hello/<name>")
async def hello(ctx, name: str):
    return {"hello": name}


@app.websocket("/echo")
async def echo(ctx):
    async for message in ctx.websocket:
        await ctx.websocket.send(message)


# The app as an ASGI application, for the server's command line.
asgi = app.asgi
