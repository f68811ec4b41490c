"""
A single-page app: the built front end (index.html and its assets in spa_dist/) served as
static files, every other page path answered with index.html so the client-side router can
show it, and an API under /api whose unknown paths are still 404s. Run with
``kyoukai run examples.recipes.spa:app`` from the repository root.
"""

from pathlib import Path

from kyoukai import Blueprint, Kyoukai
from kyoukai.static import file_response
from kyoukai.util import as_json

DIST = Path(__file__).resolve().parent / "spa_dist"

app = Kyoukai("spa")

# [api]
api = Blueprint("api", prefix="/api")
app.register_blueprint(api)


@api.route("/hello")
async def hello(ctx):
    return as_json({"message": "Hello from the API"})


# [api-end]

# [static]
# index.html at /, the build's other files at their paths. The bundles' names change with
# their content, so they may be cached for a year; index.html is revalidated every time.
app.add_static("/", DIST, index="index.html")
app.add_static("/assets", DIST / "assets", endpoint="assets", cache_control="public, max-age=31536000, immutable")
# [static-end]


# [fallback]
@app.errorhandler(404)
async def not_found(ctx, exc):
    request = ctx.request
    if request.path == "/api" or request.path.startswith("/api/"):
        return as_json({"error": f"There is no API endpoint {request.path}."}, 404)
    # A page of the app (/settings/profile), not a missing file (/assets/gone.js): the
    # front end's router takes it from here.
    if request.method in ("GET", "HEAD") and "." not in request.path.rpartition("/")[2]:
        return file_response(request, DIST / "index.html")
    return exc.get_response(ctx.environ)


# [fallback-end]
