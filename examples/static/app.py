"""
Static files: the folder public/ served under /static, a documentation folder with index
pages, long-cached fingerprinted assets, and a single file sent from a handler. Run from this
folder with ``asphalt run config.yml`` and open http://127.0.0.1:4444/, or::

    curl -i http://127.0.0.1:4444/static/css/site.css
    curl -r 0-9 http://127.0.0.1:4444/static/report.csv
"""

from pathlib import Path

from kyoukai import Kyoukai
from kyoukai.static import file_response
from kyoukai.util import as_html

# Folders given relative to this file, not to the directory the server is started from.
PUBLIC = Path(__file__).resolve().parent / "public"

app = Kyoukai("site")

# [add-static]
# GET /static/css/site.css answers with public/css/site.css.
app.add_static("/static", PUBLIC)
# [add-static-end]


# [url-for]
@app.route("/")
async def index(ctx):
    # The endpoint is "<app or blueprint name>.static"; the path below the prefix is "filename".
    css = ctx.url_for("site.static", filename="css/site.css")
    return as_html(f'<!doctype html><link rel="stylesheet" href="{css}"><h1>Static files</h1>\n')


# [url-for-end]

# [options]
# /docs/ and /docs/guide/ answer with the index.html of their folder (/docs/guide redirects to
# /docs/guide/ first, so the page's relative links work).
app.add_static("/docs", PUBLIC / "docs", endpoint="docs", index="index.html")

# Files whose names change with their content can be cached for a year without revalidation.
app.add_static("/assets", PUBLIC / "assets", endpoint="assets", cache_control="public, max-age=31536000, immutable")
# [options-end]


# [file-response]
@app.route("/report")
async def report(ctx):
    # Conditional and range requests work here too; the handler adds its own headers.
    response = file_response(ctx.request, PUBLIC / "report.csv", content_type="text/csv; charset=utf-8")
    response.headers["Content-Disposition"] = 'attachment; filename="report.csv"'
    return response


# [file-response-end]
