"""
Sessions in a signed cookie with itsdangerous: a before-request hook loads ``ctx.session``
(a dict) from the cookie, an after-request hook writes it back when it changed. The client
can read the cookie but not change it. Run with ``kyoukai run examples.recipes.sessions:app``
from the repository root, then::

    curl -c jar -b jar http://127.0.0.1:4444/
"""

import json
import os
import secrets

from itsdangerous import BadSignature, URLSafeTimedSerializer

from kyoukai import Kyoukai
from kyoukai.util import as_json

# [setup]
COOKIE_NAME = "session"
#: A session unused for this long is dropped (the cookie and its signature both expire).
MAX_AGE = 14 * 24 * 3600

# Keep the key secret and stable: changing it logs everybody out. Without one in the
# environment, a random key per start keeps this example safe (sessions end with the server).
SECRET_KEY = os.environ.get("SESSION_SECRET_KEY") or secrets.token_hex(32)
signer = URLSafeTimedSerializer(SECRET_KEY, salt="kyoukai-session")

app = Kyoukai("sessions")
# [setup-end]


# [hooks]
@app.before_request
def load_session(ctx):
    data = {}
    cookie = ctx.request.cookies.get(COOKIE_NAME)
    if cookie:
        try:
            data = signer.loads(cookie, max_age=MAX_AGE)
        except BadSignature:
            # Tampered with, signed with another key, or expired: start afresh.
            data = {}
    ctx.session = data if isinstance(data, dict) else {}
    # Compared after the handler: any change, nested ones included, is saved.
    ctx.session_loaded = json.dumps(ctx.session, sort_keys=True)


@app.after_request
def save_session(ctx, response):
    # Responses may depend on the session: no shared cache may hand one to another user.
    response.vary.add("Cookie")
    if json.dumps(ctx.session, sort_keys=True) == ctx.session_loaded:
        return response
    options = {
        "path": "/",
        "httponly": True,  # out of reach of the page's scripts
        "samesite": "Lax",  # not sent with cross-site POSTs
        "secure": ctx.request.is_secure,  # over HTTPS, never sent over plain HTTP
    }
    if ctx.session:
        response.set_cookie(COOKIE_NAME, signer.dumps(ctx.session), max_age=MAX_AGE, **options)
    else:
        response.delete_cookie(COOKIE_NAME, **options)
    return response


# [hooks-end]


# [handlers]
@app.route("/")
async def index(ctx):
    ctx.session["visits"] = ctx.session.get("visits", 0) + 1
    return as_json({"visits": ctx.session["visits"], "user": ctx.session.get("user")})


@app.route("/login", methods=["POST"])
async def login(ctx):
    # (A real login checks a password first.)
    ctx.session["user"] = ctx.request.form.get("user", "anonymous")
    return as_json({"user": ctx.session["user"]})


@app.route("/logout", methods=["POST"])
async def logout(ctx):
    ctx.session.clear()
    return None  # 204; the cookie is deleted


# [handlers-end]
