"""A page that says which protocol served it: HTTP/2 in a browser, over TLS."""

from kyoukai import Kyoukai

app = Kyoukai("tls")


@app.route("/")
async def index(ctx):
    protocol = ctx.environ["SERVER_PROTOCOL"]
    scheme = ctx.environ["wsgi.url_scheme"]
    return f"Hello from Kyoukai over {protocol} ({scheme})!\n"
