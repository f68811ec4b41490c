"""An app to try ``kyoukai run`` on: ``/divide/1/0`` fails, to see the debug page with ``--debug``."""

from kyoukai import Kyoukai

app = Kyoukai("calculator")


@app.route("/")
async def index(ctx):
    return "Try /divide/6/3, then /divide/1/0\n"


@app.route("/divide/<int:a>/<int:b>")
async def divide(ctx, a: int, b: int):
    return f"{a} / {b} = {a / b}\n"
