"""
Templates with Jinja2: one environment for the app, templates in templates/, HTML escaped
automatically. Run with ``kyoukai run examples.recipes.templating:app`` from the repository
root, then open http://127.0.0.1:4444/hello?name=Ada.
"""

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from werkzeug.wrappers import Response

from kyoukai import Kyoukai
from kyoukai.util import as_html

# [environment]
# Built once: Jinja2 compiles each template on first use and keeps it.
templates = Environment(
    loader=FileSystemLoader(Path(__file__).resolve().parent / "templates"),
    # Escape every {{ value }} in .html (and .htm, .xml) templates.
    autoescape=select_autoescape(),
)


def render(template: str, status: int = 200, /, **context) -> Response:
    """The ``template`` rendered with ``context``, as an HTML response."""
    return as_html(templates.get_template(template).render(**context), status)


# [environment-end]

app = Kyoukai("templating")


# [handlers]
@app.route("/hello")
async def hello(ctx):
    # The name comes from the user: the template escapes it, "<b>" arrives as "&lt;b&gt;".
    name = ctx.request.args.get("name", "stranger")
    return render("hello.html", name=name, path=ctx.request.path)


@app.errorhandler(404)
async def not_found(ctx, exc):
    return render("404.html", 404, path=ctx.request.path)


# [handlers-end]
