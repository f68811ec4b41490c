"""Streaming both ways: request bodies read as they arrive, responses sent as they are produced."""

import asyncio
import hashlib

from werkzeug.wrappers import Response

from kyoukai import Kyoukai
from kyoukai.util import as_json

app = Kyoukai("streaming")


# [stream-in]
@app.route("/checksum", methods=["POST", "PUT"], stream_body=True)
async def checksum(ctx):
    digest = hashlib.sha256()
    size = 0
    # Each chunk as the client sends it; reading it is what lets the client send more.
    async for chunk in ctx.request.stream:
        digest.update(chunk)
        size += len(chunk)
    return as_json({"size": size, "sha256": digest.hexdigest()})


# [stream-in-end]


# [read-async]
@app.route("/first-chunk", methods=["POST"], stream_body=True)
async def first_chunk(ctx):
    chunk = await ctx.request.stream.read_async(to_end=False)  # the next chunk, b"" at the end
    rest = await ctx.request.stream.read_async()  # everything after it
    return as_json({"first": len(chunk), "rest": len(rest)})


# [read-async-end]


# [generator]
@app.route("/numbers")
async def numbers(ctx):
    count = ctx.request.args.get("count", 5, type=int)

    def lines():
        for number in range(1, count + 1):
            yield f"{number}\n"

    return Response(lines(), content_type="text/plain")


# [generator-end]


# [async-generator]
@app.route("/countdown")
async def countdown(ctx):
    # Take what the generator needs (arguments, resources) now: the request context closes
    # when this handler returns, before the body is sent.
    start = ctx.request.args.get("from", 3, type=int)

    async def ticks():
        for number in range(start, 0, -1):
            yield f"{number}...\n"
            await asyncio.sleep(0.01)
        yield "liftoff!\n"

    return Response(ticks(), content_type="text/plain")


# [async-generator-end]
