"""Blueprint trees: prefixes, endpoint names, error handlers and their inheritance."""

from __future__ import annotations

import pytest
from werkzeug.exceptions import BadRequest, Forbidden, HTTPException, ImATeapot, NotFound
from werkzeug.wrappers import Response

from kyoukai import Blueprint
from kyoukai.testing import TestKyoukai
from kyoukai.util import as_plaintext


async def get(app: TestKyoukai, url: str, method: str = "GET") -> Response:
    return await app.inject_request({"Host": "localhost"}, url, method)


@pytest.fixture
def app() -> TestKyoukai:
    return TestKyoukai("app")


@pytest.fixture
def nested(app: TestKyoukai) -> tuple[Blueprint, Blueprint]:
    """``/api`` with a child ``/api/v1``, each with a route that raises what the URL asks."""
    api = Blueprint("api", prefix="/api")
    v1 = Blueprint("v1", parent=api, prefix="/v1")
    app.register_blueprint(api)

    codes = {400: BadRequest, 403: Forbidden, 404: NotFound, 418: ImATeapot}

    @api.route("/raise/<int:code>")
    async def api_raise(ctx, code):
        raise codes[code]()

    @v1.route("/raise/<int:code>")
    async def v1_raise(ctx, code):
        raise codes[code]()

    @v1.route("/crash")
    async def crash(ctx):
        raise ZeroDivisionError("inside v1")

    return api, v1


class TestTree:
    def test_computed_prefix_joins_the_parents(self) -> None:
        root = Blueprint("root", prefix="/r")
        mid = Blueprint("mid", parent=root, prefix="/m")
        leaf = Blueprint("leaf", parent=mid, prefix="/l")
        assert leaf.prefix == "/l"
        assert leaf.computed_prefix == "/r/m/l"
        assert leaf.parent is mid and mid.parent is root
        mid.prefix = "/middle"
        assert leaf.computed_prefix == "/r/middle/l"

    async def test_changing_a_prefix_reroutes(self, app: TestKyoukai) -> None:
        bp = Blueprint("bp", prefix="/old")
        app.register_blueprint(bp)

        @bp.route("/x")
        async def x(ctx):
            return "x"

        assert (await get(app, "/old/x")).status_code == 200
        bp.prefix = "/new"
        assert (await get(app, "/new/x")).status_code == 200
        assert (await get(app, "/old/x")).status_code == 404

    def test_traverse_tree_yields_children_before_parents(self) -> None:
        root = Blueprint("root")
        a = Blueprint("a", parent=root)
        a1 = Blueprint("a1", parent=a)
        b = Blueprint("b", parent=root)
        assert list(root.traverse_tree()) == [a1, a, b]

    def test_a_blueprint_cannot_have_two_parents(self) -> None:
        child = Blueprint("child", parent=Blueprint("one"))
        with pytest.raises(ValueError, match="already has a parent"):
            Blueprint("two").add_child(child)

    def test_adding_a_child_twice_keeps_one(self) -> None:
        root = Blueprint("root")
        child = Blueprint("child")
        root.add_child(child)
        root.add_child(child)
        assert list(root.traverse_tree()) == [child]

    async def test_nested_prefixes_route(self, app: TestKyoukai) -> None:
        outer = Blueprint("outer", prefix="/outer")
        inner = Blueprint("inner", parent=outer, prefix="/inner")
        app.register_blueprint(outer)

        @outer.route("/")
        async def outer_index(ctx):
            return "outer"

        @inner.route("/leaf/<int:n>")
        async def leaf(ctx, n):
            return f"leaf {n} {ctx.bp.name}"

        assert (await get(app, "/outer/")).get_data() == b"outer"
        assert (await get(app, "/outer/inner/leaf/3")).get_data() == b"leaf 3 inner"
        assert (await get(app, "/inner/leaf/3")).status_code == 404

    def test_endpoint_names_use_the_blueprint_name(self, app: TestKyoukai, nested: tuple) -> None:
        api, v1 = nested
        assert [r.get_endpoint_name() for r in api.routes] == ["api.api_raise"]
        assert [r.get_endpoint_name() for r in v1.routes] == ["v1.v1_raise", "v1.crash"]
        assert app.root.get_route("v1.crash").bp is v1

    def test_routes_lists_only_own_routes(self, app: TestKyoukai, nested: tuple) -> None:
        api, v1 = nested
        assert {r.get_endpoint_name() for r in app.root.routes} == set()
        assert len(api.routes) == 1

    async def test_same_function_name_in_two_blueprints(self, app: TestKyoukai) -> None:
        for name in ("one", "two"):
            bp = Blueprint(name, prefix=f"/{name}")
            app.register_blueprint(bp)

            @bp.route("/")
            async def index(ctx, name=name):
                return name

        assert (await get(app, "/one/")).get_data() == b"one"
        assert (await get(app, "/two/")).get_data() == b"two"


class TestErrorHandlers:
    async def test_handler_on_the_routes_blueprint(self, app: TestKyoukai, nested: tuple) -> None:
        api, v1 = nested

        @v1.errorhandler(403)
        async def forbidden(ctx, exc):
            return f"v1 saw {exc.code}"

        response = await get(app, "/api/v1/raise/403")
        assert response.status_code == 403
        assert response.get_data() == b"v1 saw 403"

    async def test_handler_inherited_from_the_parent(self, app: TestKyoukai, nested: tuple) -> None:
        api, v1 = nested

        @api.errorhandler(400)
        async def bad(ctx, exc):
            return f"api saw {exc.code} in {ctx.bp.name}"

        response = await get(app, "/api/v1/raise/400")
        assert response.status_code == 400
        assert response.get_data() == b"api saw 400 in v1"

    async def test_handler_inherited_from_the_app(self, app: TestKyoukai, nested: tuple) -> None:
        @app.errorhandler(418)
        async def teapot(ctx, exc):
            return "root teapot"

        assert (await get(app, "/api/v1/raise/418")).get_data() == b"root teapot"

    async def test_child_handler_does_not_apply_to_parent_routes(self, app: TestKyoukai, nested: tuple) -> None:
        api, v1 = nested

        @v1.errorhandler(400)
        async def bad(ctx, exc):
            return "v1 handler"

        response = await get(app, "/api/raise/400")
        assert response.status_code == 400
        assert response.get_data() != b"v1 handler"

    async def test_range_covers_start_to_before_end(self, app: TestKyoukai, nested: tuple) -> None:
        api, v1 = nested

        @api.errorhandler(400, 500)
        async def client_errors(ctx, exc):
            return f"client error {exc.code}"

        for code in (400, 403, 404, 418):
            response = await get(app, f"/api/v1/raise/{code}")
            assert response.status_code == code
            assert response.get_data() == f"client error {code}".encode()
        assert api.get_errorhandler(499) is not None
        assert api.get_errorhandler(500) is None

    def test_range_with_step(self) -> None:
        bp = Blueprint("bp")

        @bp.errorhandler(400, 410, 2)
        async def even(ctx, exc):
            return "even"

        assert bp.get_errorhandler(404) is not None
        assert bp.get_errorhandler(403) is None
        assert bp.get_errorhandler(NotFound()) is bp.get_errorhandler(404)

    async def test_unhandled_exception_goes_to_the_500_handler(
        self, app: TestKyoukai, nested: tuple, caplog: pytest.LogCaptureFixture
    ) -> None:
        api, v1 = nested

        @api.errorhandler(500)
        async def server_error(ctx, exc):
            return f"500 for {type(exc.original_exception).__name__}"

        response = await get(app, "/api/v1/crash")
        assert response.status_code == 500
        assert response.get_data() == b"500 for ZeroDivisionError"

    async def test_404_in_a_blueprint_prefix_uses_its_handler(self, app: TestKyoukai, nested: tuple) -> None:
        api, v1 = nested

        @app.errorhandler(404)
        async def root_404(ctx, exc):
            return "root 404"

        @api.errorhandler(404)
        async def api_404(ctx, exc):
            return "api 404"

        @v1.errorhandler(404)
        async def v1_404(ctx, exc):
            return "v1 404"

        assert (await get(app, "/api/v1/nothing")).get_data() == b"v1 404"
        assert (await get(app, "/api/v1")).get_data() == b"v1 404"
        assert (await get(app, "/api/nothing")).get_data() == b"api 404"
        assert (await get(app, "/api/v10")).get_data() == b"api 404"
        assert (await get(app, "/apix")).get_data() == b"root 404"
        response = await get(app, "/nothing")
        assert response.status_code == 404
        assert response.get_data() == b"root 404"

    async def test_405_with_custom_handler_keeps_allow(self, app: TestKyoukai) -> None:
        @app.route("/only-post", methods=["POST"])
        async def only_post(ctx):
            return "x"

        @app.errorhandler(405)
        async def not_allowed(ctx, exc):
            return "custom 405"

        response = await get(app, "/only-post")
        assert response.status_code == 405
        assert response.get_data() == b"custom 405"
        assert response.headers["Allow"] == "POST"

    async def test_error_handler_that_raises_gives_a_default_page(
        self, app: TestKyoukai, nested: tuple, caplog: pytest.LogCaptureFixture
    ) -> None:
        api, v1 = nested

        @api.errorhandler(403)
        async def broken(ctx, exc):
            raise RuntimeError("handler bug")

        response = await get(app, "/api/raise/403")
        assert response.status_code == 500
        assert b"Internal Server Error" in response.get_data()
        assert "handler bug" in caplog.text

    async def test_error_handler_raising_an_http_error_gives_its_page(self, app: TestKyoukai, nested: tuple) -> None:
        api, v1 = nested

        @api.errorhandler(403)
        async def hide(ctx, exc):
            raise NotFound()

        response = await get(app, "/api/raise/403")
        assert response.status_code == 404
        assert b"Not Found" in response.get_data()

    async def test_failing_404_handler_still_answers(self, app: TestKyoukai, caplog: pytest.LogCaptureFixture) -> None:
        @app.errorhandler(404)
        def broken(ctx, exc):
            raise KeyError("oops")

        response = await get(app, "/missing")
        assert response.status_code == 500
        assert response.headers["Server"].startswith("Kyoukai/")

    async def test_bare_body_gets_the_errors_status(self, app: TestKyoukai, nested: tuple) -> None:
        @app.errorhandler(418)
        def teapot(ctx, exc):
            return "short and stout"

        response = await get(app, "/api/raise/418")
        assert response.status_code == 418
        assert response.get_data() == b"short and stout"

    async def test_tuple_status_overrides_the_errors_status(self, app: TestKyoukai, nested: tuple) -> None:
        @app.errorhandler(404)
        async def soft(ctx, exc):
            return "not really missing", 200

        assert (await get(app, "/nowhere")).status_code == 200

    async def test_returned_response_keeps_its_status(self, app: TestKyoukai, nested: tuple) -> None:
        @app.errorhandler(400)
        async def as_response(ctx, exc):
            return as_plaintext("gone", 410)

        @app.errorhandler(403)
        async def as_tuple(ctx, exc):
            return (as_plaintext("see other", 303),)

        assert (await get(app, "/api/raise/400")).status_code == 410
        assert (await get(app, "/api/raise/403")).status_code == 303

    async def test_handler_gets_the_exception_and_matched_context(self, app: TestKyoukai, nested: tuple) -> None:
        seen = {}

        @app.errorhandler(400)
        async def bad(ctx, exc):
            seen.update(exc=exc, params=ctx.params, route=ctx.route.get_endpoint_name())
            return "x"

        await get(app, "/api/v1/raise/400")
        assert isinstance(seen["exc"], BadRequest)
        assert seen["params"] == {"code": 400}
        assert seen["route"] == "v1.v1_raise"

    async def test_handler_for_a_code_without_exception_class(self, app: TestKyoukai) -> None:
        class Custom(HTTPException):
            code = 499
            description = "custom"

        @app.route("/custom")
        async def custom(ctx):
            raise Custom()

        @app.errorhandler(499)
        async def handle(ctx, exc):
            return "handled 499"

        response = await get(app, "/custom")
        assert (response.status_code, response.get_data()) == (499, b"handled 499")

    async def test_error_handlers_do_not_run_hooks(self, app: TestKyoukai) -> None:
        calls = []

        @app.before_request
        def pre(ctx):
            calls.append("pre")

        @app.errorhandler(404)
        async def nf(ctx, exc):
            return "nf"

        await get(app, "/missing")
        assert calls == []

    def test_add_errorhandler_returns_a_route_bound_to_the_blueprint(self) -> None:
        bp = Blueprint("bp")

        def handler(ctx, exc):
            return "x"

        route = bp.add_errorhandler(handler, 404)
        assert route.bp is bp
        assert route.callable is handler
        assert bp.get_errorhandler(404) is route
