"""Routing through the blueprint tree: converters, methods, HEAD/OPTIONS, hosts, url_for, redirects."""

from __future__ import annotations

import uuid

import pytest
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect
from werkzeug.wrappers import Response

from kyoukai import Blueprint, Route
from kyoukai.testing import TestKyoukai
from kyoukai.wsgi import to_wsgi_environment


async def get(app: TestKyoukai, url: str, method: str = "GET", host: str = "localhost") -> Response:
    return await app.inject_request({"Host": host}, url, method)


@pytest.fixture
def app() -> TestKyoukai:
    return TestKyoukai("app")


class TestConverters:
    async def test_int_converter_passes_an_int(self, app: TestKyoukai) -> None:
        @app.route("/users/<int:uid>")
        async def user(ctx, uid):
            return f"{type(uid).__name__} {uid}"

        response = await get(app, "/users/42")
        assert response.status_code == 200
        assert response.get_data() == b"int 42"

    async def test_int_converter_rejects_other_text(self, app: TestKyoukai) -> None:
        @app.route("/users/<int:uid>")
        async def user(ctx, uid):
            return "matched"

        response = await get(app, "/users/abc")
        assert response.status_code == 404

    async def test_path_converter_takes_slashes(self, app: TestKyoukai) -> None:
        @app.route("/files/<path:name>")
        async def files(ctx, name):
            return name

        response = await get(app, "/files/a/b/c.txt")
        assert response.get_data() == b"a/b/c.txt"

    async def test_uuid_converter(self, app: TestKyoukai) -> None:
        @app.route("/items/<uuid:item_id>")
        async def item(ctx, item_id):
            assert isinstance(item_id, uuid.UUID)
            return item_id.hex

        value = uuid.uuid4()
        response = await get(app, f"/items/{value}")
        assert response.get_data() == value.hex.encode()
        assert (await get(app, "/items/not-a-uuid")).status_code == 404

    async def test_several_parameters_by_name(self, app: TestKyoukai) -> None:
        @app.route("/<string:a>/<int:b>/<float:c>")
        async def many(ctx, c, a, b):
            return f"{a}|{b + 1}|{c * 2}"

        response = await get(app, "/x/1/1.5")
        assert response.get_data() == b"x|2|3.0"

    async def test_percent_encoded_path_is_decoded_before_matching(self, app: TestKyoukai) -> None:
        @app.route("/café/<name>")
        async def cafe(ctx, name):
            return name

        response = await get(app, "/caf%C3%A9/a%20b")
        assert response.status_code == 200
        assert response.get_data().decode() == "a b"


class TestMethods:
    async def test_method_not_registered_gives_405_with_allow(self, app: TestKyoukai) -> None:
        @app.route("/thing", methods=["GET", "POST"])
        async def thing(ctx):
            return ctx.request.method

        response = await get(app, "/thing", "DELETE")
        assert response.status_code == 405
        allowed = {m.strip() for m in response.headers["Allow"].split(",")}
        assert allowed == {"GET", "HEAD", "POST"}

    async def test_same_path_different_routes_per_method(self, app: TestKyoukai) -> None:
        @app.route("/thing", methods=["GET"])
        async def read(ctx):
            return "read"

        @app.route("/thing", methods=["PUT"])
        async def write(ctx):
            return "write"

        assert (await get(app, "/thing")).get_data() == b"read"
        assert (await get(app, "/thing", "PUT")).get_data() == b"write"
        response = await get(app, "/thing", "PATCH")
        assert response.status_code == 405
        assert {m.strip() for m in response.headers["Allow"].split(",")} == {"GET", "HEAD", "PUT"}

    async def test_methods_are_case_insensitive_at_registration(self, app: TestKyoukai) -> None:
        @app.route("/thing", methods=["post"])
        async def thing(ctx):
            return "posted"

        assert (await get(app, "/thing", "POST")).get_data() == b"posted"

    async def test_head_is_answered_by_a_get_route(self, app: TestKyoukai) -> None:
        seen = []

        @app.route("/page", methods=["GET"])
        async def page(ctx):
            seen.append(ctx.request.method)
            return "body"

        response = await get(app, "/page", "HEAD")
        assert response.status_code == 200
        assert seen == ["HEAD"]
        assert response.headers["Content-Length"] == "4"

    async def test_head_is_not_answered_by_a_post_only_route(self, app: TestKyoukai) -> None:
        @app.route("/form", methods=["POST"])
        async def form(ctx):
            return "x"

        assert (await get(app, "/form", "HEAD")).status_code == 405

    async def test_automatic_options_lists_allowed_methods(self, app: TestKyoukai) -> None:
        called = []

        @app.route("/thing", methods=["GET", "POST"])
        async def thing(ctx):
            called.append(ctx.request.method)
            return "x"

        response = await get(app, "/thing", "OPTIONS")
        assert response.status_code in (200, 204)
        assert {m.strip() for m in response.headers["Allow"].split(",")} == {"GET", "HEAD", "POST", "OPTIONS"}
        assert response.get_data() == b""
        assert called == []

    async def test_automatic_options_on_unknown_path_is_404(self, app: TestKyoukai) -> None:
        @app.route("/thing")
        async def thing(ctx):
            return "x"

        assert (await get(app, "/other", "OPTIONS")).status_code == 404

    async def test_route_registering_options_is_called(self, app: TestKyoukai) -> None:
        @app.route("/cors", methods=["GET", "OPTIONS"])
        async def cors(ctx):
            if ctx.request.method == "OPTIONS":
                return "", 200, {"Access-Control-Allow-Origin": "*"}
            return "get"

        response = await get(app, "/cors", "OPTIONS")
        assert response.status_code == 200
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert "Allow" not in response.headers


class TestHandlers:
    async def test_sync_handler(self, app: TestKyoukai) -> None:
        @app.route("/sync")
        def sync(ctx):
            return "sync result"

        assert (await get(app, "/sync")).get_data() == b"sync result"

    async def test_async_handler(self, app: TestKyoukai) -> None:
        @app.route("/async")
        async def handler(ctx):
            return "async result", 201

        response = await get(app, "/async")
        assert response.status_code == 201
        assert response.get_data() == b"async result"

    async def test_route_decorator_returns_a_route_and_stacks(self, app: TestKyoukai) -> None:
        @app.route("/a")
        @app.route("/b", methods=["POST"])
        async def both(ctx):
            return ctx.request.path

        assert isinstance(both, Route)
        assert [url for url, _ in both.routes] == ["/b", "/a"]
        assert (await get(app, "/a")).get_data() == b"/a"
        assert (await get(app, "/b", "POST")).get_data() == b"/b"
        assert (await get(app, "/b")).status_code == 405

    async def test_route_added_after_a_request_is_routed(self, app: TestKyoukai) -> None:
        @app.route("/first")
        async def first(ctx):
            return "1"

        assert (await get(app, "/first")).status_code == 200

        @app.route("/second")
        async def second(ctx):
            return "2"

        assert (await get(app, "/second")).get_data() == b"2"

    async def test_unhandled_exception_gives_500(self, app: TestKyoukai, caplog: pytest.LogCaptureFixture) -> None:
        @app.route("/boom")
        async def boom(ctx):
            raise RuntimeError("kaboom")

        response = await get(app, "/boom")
        assert response.status_code == 500
        assert b"kaboom" not in response.get_data()
        assert "kaboom" in caplog.text

    async def test_unsendable_return_value_gives_500(self, app: TestKyoukai, caplog: pytest.LogCaptureFixture) -> None:
        @app.route("/number")
        async def number(ctx):
            return 42

        response = await get(app, "/number")
        assert response.status_code == 500
        assert response.get_data()
        assert "Route 'app.number' returned a value of type 'int', which cannot be a response" in caplog.text


class TestRegistration:
    def test_endpoint_name_is_blueprint_dot_function(self, app: TestKyoukai) -> None:
        @app.route("/")
        async def index(ctx):
            return "x"

        assert index.get_endpoint_name() == "app.index"
        assert index.bp is app.root

    def test_explicit_endpoint(self, app: TestKyoukai) -> None:
        @app.route("/", endpoint="home")
        async def index(ctx):
            return "x"

        assert index.get_endpoint_name() == "home"
        assert app.root.get_route("home") is index

    def test_duplicate_endpoint_in_blueprint_rejected_at_registration(self, app: TestKyoukai) -> None:
        @app.route("/one")
        async def handler(ctx):
            return "1"

        async def handler(ctx):  # noqa: F811 - the same name on purpose
            return "2"

        with pytest.raises(ValueError, match="app.handler"):
            app.route("/two")(handler)
        assert len(app.root.routes) == 1

    def test_duplicate_explicit_endpoint_across_blueprints_rejected_at_registration(self, app: TestKyoukai) -> None:
        child = Blueprint("child", prefix="/child")
        app.register_blueprint(child)

        @app.route("/one", endpoint="shared")
        async def one(ctx):
            return "1"

        with pytest.raises(ValueError, match="shared"):

            @child.route("/two", endpoint="shared")
            async def two(ctx):
                return "2"

    def test_duplicate_endpoint_from_attached_blueprint_rejected_at_finalize(self, app: TestKyoukai) -> None:
        first = Blueprint("api", prefix="/v1")
        second = Blueprint("api", prefix="/v2")

        @first.route("/x")
        async def x(ctx):
            return "1"

        @second.route("/x")
        async def x2(ctx):
            return "2"

        x2.endpoint = "api.x"
        app.register_blueprint(first)
        app.register_blueprint(second)
        with pytest.raises(ValueError, match="api.x"):
            app.finalize()

    def test_methods_as_a_single_string_is_rejected(self, app: TestKyoukai) -> None:
        async def handler(ctx):
            return "x"

        with pytest.raises(TypeError, match="'POST'"):
            app.route("/x", methods="POST")(handler)
        assert app.root.routes == []

    def test_handler_missing_url_parameter_rejected_at_finalize(self, app: TestKyoukai) -> None:
        @app.route("/users/<int:uid>")
        async def user(ctx):
            return "x"

        with pytest.raises(TypeError, match="app.user"):
            app.finalize()

    def test_handler_missing_prefix_parameter_rejected_at_finalize(self, app: TestKyoukai) -> None:
        bp = Blueprint("org", prefix="/orgs/<org>")
        app.register_blueprint(bp)

        @bp.route("/members")
        async def members(ctx):
            return "x"

        with pytest.raises(TypeError, match="org"):
            app.finalize()

    def test_handler_with_kwargs_accepts_any_parameter(self, app: TestKyoukai) -> None:
        @app.route("/<a>/<b>")
        async def anything(ctx, **params):
            return "x"

        app.finalize()

    def test_argument_checking_can_be_disabled(self, app: TestKyoukai) -> None:
        @app.route("/users/<int:uid>", do_argument_checking=False)
        async def user(ctx):
            return "x"

        app.finalize()


class TestHostMatching:
    @pytest.fixture
    def host_app(self) -> TestKyoukai:
        app = TestKyoukai("app", host_matching=True)

        @app.route("/")
        async def index(ctx):
            return "any " + ctx.request.host

        api = Blueprint("api", host="api.example.com")
        app.register_blueprint(api)

        @api.route("/")
        async def api_index(ctx):
            return "api"

        @api.route("/links")
        async def links(ctx):
            return ctx.url_for("api.api_index") + " " + ctx.url_for("app.index")

        tenants = Blueprint("tenants", host="<tenant>.example.org")
        app.register_blueprint(tenants)

        @tenants.route("/home")
        async def home(ctx, tenant):
            return f"tenant {tenant} " + ctx.url_for("tenants.home", tenant="other")

        return app

    async def test_host_blueprint_wins_on_its_host(self, host_app: TestKyoukai) -> None:
        assert (await get(host_app, "/", host="api.example.com")).get_data() == b"api"

    async def test_routes_without_host_match_any_host(self, host_app: TestKyoukai) -> None:
        assert (await get(host_app, "/", host="www.example.com")).get_data() == b"any www.example.com"

    async def test_host_pattern_parameter_is_passed(self, host_app: TestKyoukai) -> None:
        response = await get(host_app, "/home", host="acme.example.org")
        assert response.get_data().startswith(b"tenant acme ")

    async def test_host_route_not_reachable_from_other_hosts(self, host_app: TestKyoukai) -> None:
        assert (await get(host_app, "/links", host="www.example.com")).status_code == 404

    async def test_url_for_with_host_matching_has_no_internal_arguments(self, host_app: TestKyoukai) -> None:
        response = await get(host_app, "/links", host="api.example.com")
        assert response.get_data() == b"/ /"

    async def test_url_for_to_another_host_is_absolute(self, host_app: TestKyoukai) -> None:
        response = await get(host_app, "/home", host="acme.example.org")
        assert response.get_data() == b"tenant acme http://other.example.org/home"

    def test_host_is_inherited(self) -> None:
        parent = Blueprint("parent", host="a.example.com")
        child = Blueprint("child", parent=parent)
        assert child.host == "a.example.com"
        assert Blueprint("own", parent=parent, host="b.example.com").host == "b.example.com"


class TestUrlFor:
    @pytest.fixture
    def url_app(self, app: TestKyoukai) -> TestKyoukai:
        @app.route("/users/<int:uid>")
        async def user(ctx, uid):
            return ctx.url_for("app.user", uid=uid + 1)

        @app.route("/search")
        async def search(ctx):
            return ctx.url_for("app.search", q="a b")

        @app.route("/thing", methods=["GET"])
        async def get_thing(ctx):
            return "g"

        @app.route("/other-thing", methods=["POST"])
        async def post_thing(ctx):
            return "p"

        return app

    async def test_url_for_from_ctx(self, url_app: TestKyoukai) -> None:
        assert (await get(url_app, "/users/1")).get_data() == b"/users/2"

    async def test_url_for_unknown_values_go_to_the_query(self, url_app: TestKyoukai) -> None:
        assert (await get(url_app, "/search")).get_data() == b"/search?q=a+b"

    def test_url_for_from_the_app(self, url_app: TestKyoukai) -> None:
        environ = to_wsgi_environment([("Host", "example.com")], "GET", "/", "1.1")
        assert url_app.url_for(environ, "app.user", uid=7) == "/users/7"
        assert url_app.root.url_for(environ, "app.get_thing", method="GET") == "/thing"

    def test_url_for_unknown_endpoint_raises(self, url_app: TestKyoukai) -> None:
        from werkzeug.routing import BuildError

        environ = to_wsgi_environment([("Host", "example.com")], "GET", "/", "1.1")
        with pytest.raises(BuildError):
            url_app.url_for(environ, "app.nothing")

    def test_url_for_includes_blueprint_prefixes(self, app: TestKyoukai) -> None:
        outer = Blueprint("outer", prefix="/outer")
        inner = Blueprint("inner", parent=outer, prefix="/inner")
        app.register_blueprint(outer)

        @inner.route("/leaf/<name>")
        async def leaf(ctx, name):
            return name

        environ = to_wsgi_environment([("Host", "example.com")], "GET", "/", "1.1")
        assert app.url_for(environ, "inner.leaf", name="x") == "/outer/inner/leaf/x"


class TestRedirects:
    async def test_missing_trailing_slash_redirects(self, app: TestKyoukai) -> None:
        called = []

        @app.route("/dir/")
        async def directory(ctx):
            called.append(True)
            return "dir"

        response = await get(app, "/dir", host="example.com")
        assert response.status_code in (301, 308)
        assert response.headers["Location"] in ("http://example.com/dir/", "/dir/")
        assert called == []
        assert (await get(app, "/dir/")).get_data() == b"dir"

    async def test_redirect_keeps_the_query_string(self, app: TestKyoukai) -> None:
        @app.route("/dir/")
        async def directory(ctx):
            return "dir"

        response = await get(app, "/dir?a=1&b=2", host="example.com")
        assert response.headers["Location"].endswith("/dir/?a=1&b=2")

    async def test_redirect_without_host_header_is_a_valid_url(self, app: TestKyoukai) -> None:
        @app.route("/dir/")
        async def directory(ctx):
            return "dir"

        response = await app.inject_request({}, "/dir")
        location = response.headers["Location"]
        assert location in ("/dir/", "http://localhost/dir/")

    async def test_no_redirect_for_a_slashless_rule(self, app: TestKyoukai) -> None:
        @app.route("/file")
        async def file(ctx):
            return "file"

        assert (await get(app, "/file/")).status_code == 404

    async def test_redirect_response_carries_server_headers(self, app: TestKyoukai) -> None:
        @app.route("/dir/")
        async def directory(ctx):
            return "dir"

        response = await get(app, "/dir")
        assert response.headers["Server"].startswith("Kyoukai/")


class TestGetRouteAndMatch:
    @pytest.fixture
    def tree(self, app: TestKyoukai) -> tuple[TestKyoukai, Blueprint, Route]:
        child = Blueprint("child", prefix="/child")
        app.register_blueprint(child)

        @child.route("/item/<int:n>", methods=["GET", "POST"])
        async def item(ctx, n):
            return str(n)

        return app, child, item

    def test_get_route_before_and_after_finalize(self, tree: tuple[TestKyoukai, Blueprint, Route]) -> None:
        app, child, item = tree
        assert app.root.get_route("child.item") is item
        assert child.get_route("child.item") is item
        app.finalize()
        assert app.root.get_route("child.item") is item
        assert app.root.get_route("child.nothing") is None

    def test_match_returns_route_params_and_rule(self, tree: tuple[TestKyoukai, Blueprint, Route]) -> None:
        app, child, item = tree
        app.finalize()
        environ = to_wsgi_environment([("Host", "example.com")], "POST", "/child/item/9", "1.1")
        route, params, rule = app.root.match(environ)
        assert route is item
        assert params == {"n": 9}
        assert rule.rule == "/child/item/<int:n>"
        assert rule.endpoint == "child.item"

    def test_match_finalizes_when_needed(self, tree: tuple[TestKyoukai, Blueprint, Route]) -> None:
        app, child, item = tree
        environ = to_wsgi_environment([("Host", "example.com")], "GET", "/child/item/1", "1.1")
        assert app.root.match(environ)[0] is item

    def test_match_errors(self, tree: tuple[TestKyoukai, Blueprint, Route]) -> None:
        app, child, item = tree
        app.finalize()
        with pytest.raises(NotFound):
            app.root.match(to_wsgi_environment([], "GET", "/nothing", "1.1"))
        with pytest.raises(MethodNotAllowed):
            app.root.match(to_wsgi_environment([], "DELETE", "/child/item/1", "1.1"))

    def test_match_redirect(self, app: TestKyoukai) -> None:
        @app.route("/dir/")
        async def directory(ctx):
            return "dir"

        app.finalize()
        with pytest.raises(RequestRedirect):
            app.root.match(to_wsgi_environment([("Host", "h")], "GET", "/dir", "1.1"))

    def test_finalize_is_cached_until_the_tree_changes(self, app: TestKyoukai) -> None:
        @app.route("/a")
        async def a(ctx):
            return "a"

        first = app.finalize()
        assert app.finalize() is first

        @app.route("/b")
        async def b(ctx):
            return "b"

        assert app.root.finalized is False
        assert app.finalize() is not first


class TestApp:
    def test_construction_needs_no_event_loop(self) -> None:
        from kyoukai import Kyoukai

        app = Kyoukai("plain", server_name="example.com", debug=True)
        assert app.config == {"debug": True}
        assert app.root.name == "plain"
        app.finalize()
        assert app.debug is True

    def test_root_methods_are_forwarded(self, app: TestKyoukai) -> None:
        async def handler(ctx):
            return "x"

        route = app.add_route(app.wrap_route(handler), "/added", methods=["PUT"])
        assert route.bp is app.root
        assert app.root.get_route("app.handler") is route
        with pytest.raises(AttributeError, match="no_such_thing"):
            app.no_such_thing  # noqa: B018

    async def test_add_route_forwarded_route_serves(self, app: TestKyoukai) -> None:
        async def handler(ctx):
            return "added"

        app.add_route(app.wrap_route(handler), "/added", methods=["PUT"])
        assert (await get(app, "/added", "PUT")).get_data() == b"added"

    async def test_register_blueprint_returns_it(self, app: TestKyoukai) -> None:
        bp = Blueprint("bp", prefix="/bp")
        assert app.register_blueprint(bp) is bp
        assert bp.parent is app.root

    async def test_requests_are_logged(self, app: TestKyoukai, caplog: pytest.LogCaptureFixture) -> None:
        @app.route("/logged")
        async def logged(ctx):
            return "x", 202

        with caplog.at_level("INFO", logger="kyoukai"):
            await get(app, "/logged")
            await get(app, "/not-there")
        assert '"GET /logged HTTP/1.1" 202' in caplog.text
        assert '"GET /not-there HTTP/1.1" 404' in caplog.text

    async def test_custom_response_class_wraps_plain_values(self) -> None:
        class MyResponse(Response):
            pass

        app = TestKyoukai("app", response_class=MyResponse)

        @app.route("/")
        async def index(ctx):
            return "plain"

        assert type(await get(app, "/")) is MyResponse


class TestMatchCache:
    """Matches of rules without arguments are remembered; rules with arguments always run their converters."""

    async def test_a_converter_runs_on_every_request(self, app: TestKyoukai) -> None:
        from werkzeug.routing import BaseConverter

        calls: list[str] = []

        class Counting(BaseConverter):
            def to_python(self, value: str) -> str:
                calls.append(value)
                return value.upper()

        @app.route("/items/<counting:name>")
        async def item(ctx, name):
            return name

        app.finalize(converters={"counting": Counting})
        for _ in range(3):
            assert (await get(app, "/items/abc")).get_data() == b"ABC"
        assert calls == ["abc", "abc", "abc"]

    async def test_params_are_a_new_dict_each_time(self, app: TestKyoukai) -> None:
        seen: list[dict] = []

        @app.route("/static")
        async def static(ctx):
            seen.append(ctx.params)
            ctx.params["leak"] = True
            return "ok"

        for _ in range(2):
            assert (await get(app, "/static")).get_data() == b"ok"
        assert seen == [{"leak": True}, {"leak": True}]
        assert seen[0] is not seen[1]

    async def test_the_method_and_host_are_part_of_the_match(self, app: TestKyoukai) -> None:
        @app.route("/only-get")
        async def only_get(ctx):
            return "got"

        assert (await get(app, "/only-get")).status_code == 200
        assert (await get(app, "/only-get", method="POST")).status_code == 405
        assert (await get(app, "/only-get", host="other.example")).status_code == 200
        assert (await get(app, "/only-get", method="DELETE")).status_code == 405

    async def test_a_rebuilt_map_is_matched_afresh(self, app: TestKyoukai) -> None:
        @app.route("/first")
        async def first(ctx):
            return "first"

        assert (await get(app, "/first")).status_code == 200
        app.root.finalized = False
        app.root.routes.clear()

        @app.route("/second")
        async def second(ctx):
            return "second"

        app.finalize()
        assert (await get(app, "/first")).status_code == 404
        assert (await get(app, "/second")).get_data() == b"second"
