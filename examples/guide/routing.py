"""Routing: URL rules, converters, methods, return values and building URLs."""

import uuid

from werkzeug.routing import BaseConverter

from kyoukai import Kyoukai
from kyoukai.util import as_json

app = Kyoukai("routing")


# [basic]
@app.route("/")
async def index(ctx):
    return "The index page"


@app.route("/about")
def about(ctx):
    # Plain functions work as well as coroutine functions.
    return "A plain function"


# [basic-end]


# [converters]
@app.route("/users/<int:user_id>")
async def user(ctx, user_id: int):
    return f"User number {user_id}"


@app.route("/docs/<path:page>")
async def docs_page(ctx, page: str):
    return f"Page {page}"  # "a/b/c" for /docs/a/b/c


@app.route("/orders/<uuid:order_id>")
async def order(ctx, order_id: uuid.UUID):
    return f"Order {order_id.hex}"


@app.route("/colour/<any(red, green, blue):colour>")
async def colour(ctx, colour: str):
    return f"You picked {colour}"


# [converters-end]


# [methods]
@app.route("/items", methods=["POST"])
async def create_item(ctx):
    return "created", 201


@app.route("/items/<int:item_id>", methods=["PUT", "DELETE"])
async def change_item(ctx, item_id: int):
    return f"{ctx.request.method} item {item_id}"


# [methods-end]


# [many-urls]
@app.route("/page/<int:number>")
@app.route("/page")
async def page(ctx, number: int = 1):
    return f"Page {number}"


# [many-urls-end]


# [returns]
@app.route("/teapot")
async def teapot(ctx):
    # (body, status, headers): the status and headers are optional.
    return "I'm a teapot", 418, {"X-Tea": "Earl Grey"}


@app.route("/empty")
async def empty(ctx):
    return None  # 204 No Content


@app.route("/data")
async def data(ctx):
    return {"answer": 42}  # a dict or a list is sent as JSON


@app.route("/created-json", methods=["POST"])
async def created_json(ctx):
    return {"id": 7}, 201, {"Location": "/items/7"}


@app.route("/pretty")
async def pretty(ctx):
    return as_json({"answer": 42}, indent=2)  # keyword arguments go to json.dumps


# [returns-end]


# [url-for]
@app.route("/links")
async def links(ctx):
    return as_json(
        {
            "user": ctx.url_for("routing.user", user_id=7),
            "page": ctx.url_for("routing.page", number=3),
            "first_page": ctx.url_for("routing.page"),
            "search": ctx.url_for("routing.docs_page", page="intro", lang="en"),
        }
    )


# [url-for-end]


# [custom-converter]
class UpperConverter(BaseConverter):
    """Matches a word and hands it to the handler upper-cased."""

    regex = r"[a-zA-Z]+"

    def to_python(self, value: str) -> str:
        return value.upper()

    def to_url(self, value: str) -> str:
        return value.lower()


@app.route("/shout/<upper:word>")
async def shout(ctx, word: str):
    return f"{word}!"


# After the last route: build the routing map with the extra converter.
app.finalize(converters={"upper": UpperConverter})
# [custom-converter-end]
