"""Errors and hooks: raising HTTP errors, error handlers, before/after request hooks."""

import html
import time

from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import Unauthorized, abort

from kyoukai import Kyoukai
from kyoukai.util import as_html

app = Kyoukai("errors")


# [raise]
@app.route("/teapots/<int:number>")
async def teapot(ctx, number: int):
    if number > 3:
        abort(404, f"We only have three teapots, not {number}.")
    return f"Teapot {number}"


@app.route("/broken")
async def broken(ctx):
    raise RuntimeError("this is a bug")  # a 500; the traceback goes to the log


# [raise-end]


# [handlers]
@app.errorhandler(404)
async def not_found(ctx, exc):
    return as_html(f"<h1>Not here</h1><p>{html.escape(exc.description)}</p>", 404)


@app.errorhandler(500, 600)
async def server_error(ctx, exc):
    # A bare body gets the status of the error being handled (500, 502, ...).
    return "Something broke on our side; it has been logged."


# [handlers-end]


# [hooks]
@app.before_request
async def start_timer(ctx):
    ctx.started = time.perf_counter()
    # Returning None keeps the context; returning a context replaces it.


@app.after_request
async def server_timing(ctx, response):
    elapsed = (time.perf_counter() - ctx.started) * 1000
    response.headers["Server-Timing"] = f"app;dur={elapsed:.2f}"
    return response


# [hooks-end]


# [route-hooks]
@app.route("/private")
async def private(ctx):
    return f"Welcome, {ctx.request.authorization.username}"


@private.before_request
def require_login(ctx):
    auth = ctx.request.authorization
    if auth is None or (auth.username, auth.password) != ("alice", "wonderland"):
        raise Unauthorized(www_authenticate=WWWAuthenticate("basic", {"realm": "private"}))


# [route-hooks-end]
