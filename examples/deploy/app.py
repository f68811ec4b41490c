"""
An app meant to run behind a reverse proxy on the same machine: it trusts the proxy's
``X-Forwarded-For`` and ``X-Forwarded-Proto`` headers, and only the proxy's.
"""

from kyoukai import Kyoukai

app = Kyoukai("deploy")

# [proxy]
#: Addresses of the reverse proxies allowed to say who the client is.
TRUSTED_PROXIES = {"127.0.0.1", "::1"}


@app.before_request
async def behind_proxy(ctx):
    request = ctx.request
    if request.remote_addr not in TRUSTED_PROXIES:
        return  # a direct client: its headers prove nothing
    forwarded_for = request.headers.get("X-Forwarded-For")
    if forwarded_for:
        # The proxy appends the address it saw: the last entry is the one to trust.
        request.remote_addr = forwarded_for.split(",")[-1].strip()
    proto = request.headers.get("X-Forwarded-Proto")
    if proto in ("http", "https"):
        # request.scheme for the handlers, wsgi.url_scheme for url_for().
        request.scheme = ctx.environ["wsgi.url_scheme"] = proto


# [proxy-end]


@app.route("/")
async def index(ctx):
    return f"Hello {ctx.request.remote_addr}, you came over {ctx.request.scheme}.\n"
