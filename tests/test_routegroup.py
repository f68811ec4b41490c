"""Route groups: classes whose marked methods become a blueprint's routes, handlers and hooks."""

from __future__ import annotations

import pytest
from werkzeug.exceptions import Forbidden
from werkzeug.wrappers import Response

from kyoukai import Blueprint, Route, RouteGroup, routegroup
from kyoukai.routegroup import get_rg_bp
from kyoukai.testing import TestKyoukai


async def get(app: TestKyoukai, url: str, method: str = "GET") -> Response:
    return await app.inject_request({"Host": "localhost"}, url, method)


class Users(RouteGroup, prefix="/users"):
    def __init__(self, db: dict[int, str]) -> None:
        self.db = db
        self.calls: list[str] = []

    @routegroup.route("/<int:uid>")
    async def get_user(self, ctx, uid):
        if uid not in self.db:
            raise Forbidden()
        return self.db[uid]

    @routegroup.route("/", methods=["POST"])
    @routegroup.route("/new", methods=["PUT"])
    def create(self, ctx):
        uid = max(self.db) + 1
        self.db[uid] = ctx.request.get_data(as_text=True)
        return str(uid), 201

    @routegroup.route("/calls")
    async def show_calls(self, ctx):
        return ",".join(self.calls)

    @show_calls.before_request
    async def show_calls_pre(self, ctx):
        self.calls.append("route-pre")

    @show_calls.after_request
    def show_calls_post(self, ctx, response):
        response.headers["X-Route-Post"] = "yes"
        return response

    @routegroup.errorhandler(403)
    async def forbidden(self, ctx, exc):
        return f"no user ({len(self.db)} known)"

    @routegroup.before_request
    async def group_pre(self, ctx):
        self.calls.append("group-pre")

    @routegroup.after_request
    async def group_post(self, ctx, response):
        response.headers["X-Group"] = type(self).__name__
        return response

    def not_a_route(self, ctx):
        return "hidden"


@pytest.fixture
def app() -> TestKyoukai:
    return TestKyoukai("app")


@pytest.fixture
def users(app: TestKyoukai) -> Users:
    group = Users({1: "alice", 2: "bob"})
    app.add_route_group(group)
    return group


class TestRouteGroup:
    async def test_routes_are_bound_methods_under_the_prefix(self, app: TestKyoukai, users: Users) -> None:
        response = await get(app, "/users/2")
        assert response.status_code == 200
        assert response.get_data() == b"bob"

    async def test_stacked_route_marks_register_every_url(self, app: TestKyoukai, users: Users) -> None:
        response = await app.inject_request({}, "/users/", "POST", body="carol")
        assert (response.status_code, response.get_data()) == (201, b"3")
        response = await app.inject_request({}, "/users/new", "PUT", body="dave")
        assert response.get_data() == b"4"
        assert users.db[4] == "dave"
        assert (await get(app, "/users/new")).status_code == 405

    async def test_group_error_handler(self, app: TestKyoukai, users: Users) -> None:
        response = await get(app, "/users/99")
        assert response.status_code == 403
        assert response.get_data() == b"no user (2 known)"

    async def test_group_hooks_and_route_hooks(self, app: TestKyoukai, users: Users) -> None:
        response = await get(app, "/users/calls")
        assert response.get_data() == b"group-pre,route-pre"
        assert response.headers["X-Group"] == "Users"
        assert response.headers["X-Route-Post"] == "yes"

    async def test_route_hooks_apply_to_their_route_only(self, app: TestKyoukai, users: Users) -> None:
        response = await get(app, "/users/1")
        assert users.calls == ["group-pre"]
        assert "X-Route-Post" not in response.headers
        assert response.headers["X-Group"] == "Users"

    def test_get_rg_bp(self, users: Users, app: TestKyoukai) -> None:
        bp = get_rg_bp(users)
        assert isinstance(bp, Blueprint)
        assert bp.name == "Users"
        assert bp.prefix == "/users"
        assert bp.parent is app.root
        assert {r.get_endpoint_name() for r in bp.routes} == {"Users.get_user", "Users.create", "Users.show_calls"}
        assert all(isinstance(r, Route) and r.bp is bp for r in bp.routes)
        assert bp.get_errorhandler(403) is not None

    def test_add_route_group_returns_the_parent(self, app: TestKyoukai) -> None:
        assert app.add_route_group(Users({1: "a"})) is app.root

    async def test_unmarked_methods_are_not_routes(self, app: TestKyoukai, users: Users) -> None:
        assert (await get(app, "/users/not_a_route")).status_code == 404
        assert app.root.get_route("Users.not_a_route") is None

    async def test_each_instance_has_its_own_blueprint(self) -> None:
        first, second = Users({1: "first"}), Users({1: "second"})
        assert get_rg_bp(first) is not get_rg_bp(second)
        app_one, app_two = TestKyoukai("one"), TestKyoukai("two")
        app_one.add_route_group(first)
        app_two.add_route_group(second)
        assert (await get(app_one, "/users/1")).get_data() == b"first"
        assert (await get(app_two, "/users/1")).get_data() == b"second"

    async def test_instance_attribute_does_not_hide_a_route(self, app: TestKyoukai) -> None:
        class Shadowed(RouteGroup, prefix="/s"):
            def __init__(self) -> None:
                self.index = "an attribute with the route's name"
                self.pre = None

            @routegroup.route("/")
            async def index(self, ctx):
                return "route " + self.index

            @routegroup.before_request
            def pre(self, ctx):
                ctx.request.environ["seen_pre"] = True

            @routegroup.after_request
            def post(self, ctx, response):
                response.headers["X-Pre"] = str(ctx.request.environ.get("seen_pre"))
                return response

        app.add_route_group(Shadowed())
        response = await get(app, "/s/")
        assert response.get_data() == b"route an attribute with the route's name"
        assert response.headers["X-Pre"] == "True"

    async def test_group_without_class_kwargs(self, app: TestKyoukai) -> None:
        class Plain(RouteGroup):
            @routegroup.route("/plain")
            def plain(self, ctx):
                return "plain"

        group = Plain()
        assert get_rg_bp(group).prefix == ""
        app.add_route_group(group)
        assert (await get(app, "/plain")).get_data() == b"plain"

    async def test_route_kwargs_reach_the_route(self, app: TestKyoukai) -> None:
        class Named(RouteGroup):
            @routegroup.route("/named", endpoint="custom.name", reverse_hooks=True)
            def named(self, ctx):
                return "named"

        group = Named()
        app.add_route_group(group)
        route = app.root.get_route("custom.name")
        assert route is not None and route.reverse_hooks is True

    async def test_hook_marker_with_type(self, app: TestKyoukai) -> None:
        class Hooked(RouteGroup):
            @routegroup.route("/h")
            def h(self, ctx):
                return "h"

            @routegroup.hook("post")
            def post(self, ctx, response):
                return "replaced by hook"

            @h.hook("pre")
            def h_pre(self, ctx):
                self.pre_ran = True

        group = Hooked()
        app.add_route_group(group)
        assert (await get(app, "/h")).get_data() == b"replaced by hook"
        assert group.pre_ran is True

    async def test_route_hook_defined_outside_the_class(self, app: TestKyoukai) -> None:
        calls = []

        class Outside(RouteGroup):
            @routegroup.route("/o")
            def o(self, ctx):
                return "o"

        def outside_hook(ctx):
            calls.append(ctx.request.path)

        Outside.o.before_request(outside_hook)
        app.add_route_group(Outside())
        await get(app, "/o")
        assert calls == ["/o"]

    def test_bad_hook_type_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="hook type"):
            routegroup.hook("during")

        @routegroup.route("/x")
        def x(self, ctx):
            return "x"

        with pytest.raises(ValueError, match="hook type"):
            x.hook("sideways")(lambda self, ctx: None)

    def test_methods_as_a_single_string_is_rejected(self) -> None:
        with pytest.raises(TypeError, match="'PUT'"):
            routegroup.route("/x", methods="PUT")

    def test_group_error_handler_range(self) -> None:
        class Ranged(RouteGroup):
            @routegroup.errorhandler(500, 505)
            def server_errors(self, ctx, exc):
                return "x"

        bp = get_rg_bp(Ranged())
        assert bp.get_errorhandler(503) is bp.get_errorhandler(500)
        assert bp.get_errorhandler(505) is None

    async def test_handler_signature_is_checked(self, app: TestKyoukai) -> None:
        class Wrong(RouteGroup):
            @routegroup.route("/<int:n>")
            def wrong(self, ctx):
                return "x"

        app.add_route_group(Wrong())
        with pytest.raises(TypeError, match="Wrong.wrong"):
            app.finalize()
