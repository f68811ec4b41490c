"""Requests and responses: query strings, headers, cookies, forms, JSON, files, redirects."""

from werkzeug.utils import redirect

from kyoukai import Kyoukai
from kyoukai.util import as_json, as_plaintext

app = Kyoukai("requests")


# [query-headers]
@app.route("/search")
async def search(ctx):
    args = ctx.request.args  # the query string, a MultiDict
    return as_json(
        {
            "q": args.get("q", ""),
            "page": args.get("page", 1, type=int),
            "tags": args.getlist("tag"),
            "agent": ctx.request.headers.get("User-Agent", "unknown"),
        }
    )


# [query-headers-end]


# [form-cookies]
@app.route("/login", methods=["POST"])
async def login(ctx):
    name = ctx.request.form.get("name", "").strip()
    if not name:
        return "Tell us your name.", 400
    response = redirect("/whoami", code=303)
    response.set_cookie("user", name, httponly=True, samesite="Lax")
    return response


@app.route("/whoami")
async def whoami(ctx):
    return as_plaintext(f"You are {ctx.request.cookies.get('user', 'a stranger')}.")


# [form-cookies-end]


# [json]
@app.route("/sum", methods=["POST"])
async def total(ctx):
    # 415 if the body is not declared as JSON, 400 if it does not parse.
    data = ctx.request.get_json()
    return as_json({"sum": sum(data["numbers"])})


# [json-end]


# [files]
@app.route("/avatar", methods=["POST"])
async def avatar(ctx):
    upload = ctx.request.files["avatar"]  # a werkzeug FileStorage; 400 if missing
    content = upload.read()
    return as_json({"filename": upload.filename, "type": upload.mimetype, "size": len(content)})


# [files-end]
