"""The smallest Kyoukai app: one page, served by ``asphalt run config.yml``."""

from kyoukai import Kyoukai

app = Kyoukai("hello")


@app.route("/")
async def index(ctx):
    return "Hello from Kyoukai!\n"


@app.route("/hello/<name>")
async def hello(ctx, name: str):
    return f"Hello, {name}!\n"
