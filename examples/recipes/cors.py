"""
CORS: an API under /api that pages from a list of other origins may call from the browser.
An after-request hook adds ``Access-Control-Allow-Origin`` for allowed origins; OPTIONS
routes answer the preflight; an error handler puts the header on error responses too. Run
with ``kyoukai run examples.recipes.cors:app`` from the repository root, then::

    curl -i -H 'Origin: http://localhost:5173' http://127.0.0.1:4444/api/items
    curl -i -X OPTIONS -H 'Origin: http://localhost:5173' \\
        -H 'Access-Control-Request-Method: POST' http://127.0.0.1:4444/api/items
"""

from werkzeug.wrappers import Response

from kyoukai import Blueprint, Kyoukai
from kyoukai.util import as_json

# [policy]
#: The origins (scheme://host[:port], exactly as browsers send them) allowed to call the API.
ALLOWED_ORIGINS = frozenset({"https://app.example.com", "http://localhost:5173"})
#: The request headers a page may send beyond the always-allowed ones.
ALLOWED_HEADERS = "Content-Type, Authorization"
#: How long, in seconds, a browser may reuse a preflight answer.
PREFLIGHT_MAX_AGE = "600"


def add_cors_headers(request, response):
    """Let the request's origin read ``response`` if it is allowed."""
    # The answer depends on Origin: caches must keep one copy per origin.
    response.vary.add("Origin")
    origin = request.headers.get("Origin")
    if origin in ALLOWED_ORIGINS:
        response.headers["Access-Control-Allow-Origin"] = origin
    return response


# [policy-end]

app = Kyoukai("cors")
api = Blueprint("api", prefix="/api")
app.register_blueprint(api)

ITEMS = [{"id": 1, "name": "teapot"}]


@api.route("/items")
async def list_items(ctx):
    return as_json(ITEMS)


@api.route("/items", methods=["POST"])
async def add_item(ctx):
    item = {"id": len(ITEMS) + 1, "name": str((ctx.request.get_json(silent=True) or {}).get("name"))}
    ITEMS.append(item)
    return as_json(item, 201)


# [hooks]
@api.after_request
def cors(ctx, response):
    return add_cors_headers(ctx.request, response)


# Hooks run around handlers only; error responses (404, 405, 500...) come from here.
@api.errorhandler(400, 600)
def cors_errors(ctx, exc):
    return add_cors_headers(ctx.request, exc.get_response(ctx.environ))


# [hooks-end]


# [preflight]
# OPTIONS is answered automatically (with Allow), but without hooks: the API's URLs get a
# route of their own for it, which adds what a preflight needs (the hook adds the origin).
async def preflight(ctx, **params):
    # The methods of the other routes of this URL, as the automatic answer would list them.
    adapter = ctx.app.root.finalize().bind_to_environ(ctx.environ)
    allow = ", ".join(sorted(adapter.allowed_methods()))
    response = Response(status=204, headers={"Allow": allow})
    request = ctx.request
    if request.headers.get("Origin") in ALLOWED_ORIGINS and "Access-Control-Request-Method" in request.headers:
        response.headers["Access-Control-Allow-Methods"] = allow
        response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
        response.headers["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE
    return response


def answer_preflights(bp: Blueprint) -> None:
    """Route OPTIONS of every URL of ``bp``'s routes to :func:`preflight` (call it last)."""
    route = bp.wrap_route(preflight)
    for url in sorted({url for other in bp.routes for url, methods in other.routes if "OPTIONS" not in methods}):
        route.add_path(url, ["OPTIONS"])
    bp.add_route(route)


answer_preflights(api)
# [preflight-end]
