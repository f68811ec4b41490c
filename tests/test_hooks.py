"""Pre- and post-request hooks of blueprints and routes."""

from __future__ import annotations

import pytest
from werkzeug.wrappers import Response

from kyoukai import Blueprint, HTTPRequestContext
from kyoukai.testing import TestKyoukai


async def get(app: TestKyoukai, url: str) -> Response:
    return await app.inject_request({"Host": "localhost"}, url)


@pytest.fixture
def app() -> TestKyoukai:
    return TestKyoukai("app")


@pytest.fixture
def calls() -> list[str]:
    return []


@pytest.fixture
def tree(app: TestKyoukai, calls: list[str]) -> Blueprint:
    """app -> parent -> child, each with a pre and a post hook recording their order."""
    parent = Blueprint("parent", prefix="/p")
    child = Blueprint("child", parent=parent, prefix="/c")
    app.register_blueprint(parent)
    for name, bp in (("root", app.root), ("parent", parent), ("child", child)):

        def pre(ctx, name=name):
            calls.append(f"pre:{name}")

        async def post(ctx, response, name=name):
            calls.append(f"post:{name}")

        bp.before_request(pre)
        bp.after_request(post)
    return child


class TestHooks:
    async def test_order_is_parent_first(self, app: TestKyoukai, tree: Blueprint, calls: list[str]) -> None:
        @tree.route("/x")
        async def handler(ctx):
            calls.append("handler")
            return "x"

        assert (await get(app, "/p/c/x")).get_data() == b"x"
        assert calls == [
            "pre:root",
            "pre:parent",
            "pre:child",
            "handler",
            "post:root",
            "post:parent",
            "post:child",
        ]

    async def test_route_hooks_run_after_blueprint_hooks(
        self, app: TestKyoukai, tree: Blueprint, calls: list[str]
    ) -> None:
        @tree.route("/x")
        async def handler(ctx):
            calls.append("handler")
            return "x"

        @handler.before_request
        async def route_pre(ctx):
            calls.append("pre:route")

        @handler.after_request
        def route_post(ctx, response):
            calls.append("post:route")

        await get(app, "/p/c/x")
        assert calls[:4] == ["pre:root", "pre:parent", "pre:child", "pre:route"]
        assert calls[-1] == "post:route"

    async def test_reverse_hooks(self, app: TestKyoukai, tree: Blueprint, calls: list[str]) -> None:
        @tree.route("/x", reverse_hooks=True)
        async def handler(ctx):
            calls.append("handler")
            return "x"

        await get(app, "/p/c/x")
        assert calls == [
            "pre:child",
            "pre:parent",
            "pre:root",
            "handler",
            "post:child",
            "post:parent",
            "post:root",
        ]

    async def test_should_invoke_hooks_false(self, app: TestKyoukai, tree: Blueprint, calls: list[str]) -> None:
        @tree.route("/x", should_invoke_hooks=False)
        async def handler(ctx):
            calls.append("handler")
            return "x"

        @handler.before_request
        def route_pre(ctx):
            calls.append("pre:route")

        assert (await get(app, "/p/c/x")).get_data() == b"x"
        assert calls == ["handler"]

    async def test_hooks_of_other_branches_do_not_run(
        self, app: TestKyoukai, tree: Blueprint, calls: list[str]
    ) -> None:
        @app.route("/top")
        async def top(ctx):
            return "top"

        await get(app, "/top")
        assert calls == ["pre:root", "post:root"]

    async def test_pre_hook_may_replace_the_context(self, app: TestKyoukai) -> None:
        class Replacement(HTTPRequestContext):
            marker = "replaced"

        @app.before_request
        async def replace(ctx):
            new = Replacement(ctx, ctx.request)
            new.app = ctx.app
            return new

        @app.after_request
        async def post(ctx, response):
            response.headers["X-Post-Ctx"] = type(ctx).__name__
            return response

        @app.route("/")
        async def index(ctx):
            return f"{type(ctx).__name__} {ctx.marker} {ctx.parent is not None}"

        response = await get(app, "/")
        assert response.get_data() == b"Replacement replaced True"
        assert response.headers["X-Post-Ctx"] == "Replacement"

    async def test_pre_hook_returning_none_keeps_the_context(self, app: TestKyoukai) -> None:
        seen = []

        @app.before_request
        def annotate(ctx):
            ctx.user = "alice"
            seen.append(ctx)

        @app.route("/")
        async def index(ctx):
            assert ctx is seen[0]
            return ctx.user

        assert (await get(app, "/")).get_data() == b"alice"

    async def test_pre_hook_returning_something_else_is_an_error(
        self, app: TestKyoukai, caplog: pytest.LogCaptureFixture
    ) -> None:
        @app.before_request
        def wrong(ctx):
            return "not a context"

        @app.route("/")
        async def index(ctx):
            return "unreachable"

        response = await get(app, "/")
        assert response.status_code == 500
        assert "not a context" in caplog.text

    async def test_pre_hook_raising_an_http_error_stops_the_request(self, app: TestKyoukai) -> None:
        from werkzeug.exceptions import Unauthorized

        called = []

        @app.before_request
        def guard(ctx):
            if "Authorization" not in ctx.request.headers:
                raise Unauthorized()

        @app.route("/")
        async def index(ctx):
            called.append(True)
            return "secret"

        assert (await get(app, "/")).status_code == 401
        assert called == []
        response = await app.inject_request({"Authorization": "Bearer x"}, "/")
        assert response.get_data() == b"secret"

    async def test_post_hook_may_replace_the_response(self, app: TestKyoukai) -> None:
        @app.after_request
        async def replace(ctx, response):
            return "replaced " + response.get_data(as_text=True), 202

        @app.route("/")
        async def index(ctx):
            return "original"

        response = await get(app, "/")
        assert response.status_code == 202
        assert response.get_data() == b"replaced original"

    async def test_post_hook_returning_none_keeps_the_response(self, app: TestKyoukai) -> None:
        @app.after_request
        def touch(ctx, response):
            response.headers["X-Touched"] = "1"

        @app.route("/")
        async def index(ctx):
            return "original", 201

        response = await get(app, "/")
        assert (response.status_code, response.get_data()) == (201, b"original")
        assert response.headers["X-Touched"] == "1"

    async def test_post_hooks_chain(self, app: TestKyoukai) -> None:
        @app.after_request
        def first(ctx, response):
            return response.get_data(as_text=True) + "1"

        @app.after_request
        def second(ctx, response):
            return response.get_data(as_text=True) + "2"

        @app.route("/")
        async def index(ctx):
            return "0"

        assert (await get(app, "/")).get_data() == b"012"

    def test_add_hook_rejects_unknown_types(self, app: TestKyoukai) -> None:
        with pytest.raises(ValueError, match="hook type"):
            app.add_hook("middle", lambda ctx: None)

        @app.route("/")
        def index(ctx):
            return "x"

        with pytest.raises(ValueError, match="hook type"):
            index.add_hook("middle", lambda ctx: None)

    def test_get_hooks(self, app: TestKyoukai) -> None:
        child = Blueprint("child", parent=app.root)

        def root_pre(ctx):
            return None

        def child_pre(ctx):
            return None

        assert app.add_hook("pre", root_pre) is root_pre
        child.before_request(child_pre)
        assert child.get_hooks("pre") == [root_pre, child_pre]
        assert app.root.get_hooks("pre") == [root_pre]
        assert child.get_hooks("post") == []
