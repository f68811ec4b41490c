"""
Kyoukai 2.2 code runs unchanged: every public name imports from its 2.2 module (the same object
as at its documented home), the patterns of 2.2's own test suite and of its documentation's
samples work, ``ctx.url_for`` builds absolute URLs on real servers, and the uWSGI names say
what to run instead.
"""

from __future__ import annotations

import asyncio
import importlib
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
from asphalt.core import ContainerComponent, Context
from asphalt.core.component import component_types
from conftest import RunningServer, serve
from werkzeug.exceptions import HTTPException, abort
from werkzeug.wrappers import Request, Response

from kyoukai import Kyoukai
from kyoukai.asphalt import (
    ConnectionLostEvent,
    ConnectionMadeEvent,
    CtxEvent,
    HTTPRequestContext,
    KyoukaiBaseComponent,
    KyoukaiComponent,
    RouteInvokedEvent,
    RouteMatchedEvent,
    RouteReturnedEvent,
)
from kyoukai.backends.http2 import H2KyoukaiComponent
from kyoukai.blueprint import Blueprint
from kyoukai.route import Route
from kyoukai.routegroup import RouteGroupType, after_request, before_request, errorhandler, get_rg_bp, route
from kyoukai.testing import TestKyoukai
from kyoukai.util import as_html, as_json, as_plaintext, wrap_response
from kyoukai.wsgi import get_formatted_response, to_wsgi_environment

ROOT = Path(__file__).resolve().parent.parent

#: (the 2.2 module, a public name it held, the module documenting that name now).
NAMES_22 = [
    *[
        ("kyoukai", name, home)
        for name, home in [
            ("Kyoukai", "kyoukai.app"),
            ("HTTPRequestContext", "kyoukai.context"),
            ("KyoukaiComponent", "kyoukai.asphalt"),
            ("Blueprint", "kyoukai.blueprint"),
            ("Route", "kyoukai.route"),
            ("RouteGroup", "kyoukai.routegroup"),
            ("TestKyoukai", "kyoukai.testing"),
            ("__version__", "kyoukai.version"),
        ]
    ],
    ("kyoukai.app", "Kyoukai", "kyoukai.app"),
    ("kyoukai.app", "__version__", "kyoukai.version"),
    *[
        ("kyoukai.asphalt", name, "kyoukai.events")
        for name in (
            "ConnectionMadeEvent",
            "ConnectionLostEvent",
            "CtxEvent",
            "RouteMatchedEvent",
            "RouteInvokedEvent",
            "RouteReturnedEvent",
        )
    ],
    ("kyoukai.asphalt", "KyoukaiBaseComponent", "kyoukai.asphalt"),
    ("kyoukai.asphalt", "KyoukaiComponent", "kyoukai.asphalt"),
    ("kyoukai.asphalt", "HTTPRequestContext", "kyoukai.context"),
    ("kyoukai.blueprint", "Blueprint", "kyoukai.blueprint"),
    ("kyoukai.route", "Route", "kyoukai.route"),
    *[
        ("kyoukai.routegroup", name, "kyoukai.routegroup")
        for name in (
            "RouteGroup",
            "RouteGroupType",
            "get_rg_bp",
            "route",
            "errorhandler",
            "hook",
            "before_request",
            "after_request",
        )
    ],
    ("kyoukai.testing", "TestKyoukai", "kyoukai.testing"),
    *[("kyoukai.util", name, "kyoukai.util") for name in ("as_html", "as_plaintext", "as_json", "wrap_response")],
    *[("kyoukai.wsgi", name, "kyoukai.wsgi") for name in ("to_wsgi_environment", "get_formatted_response")],
    *[
        ("kyoukai.backends.http2", name, "kyoukai.backends.http2")
        for name in ("H2KyoukaiComponent", "H2KyoukaiProtocol", "H2State")
    ],
    ("kyoukai.backends.httptools_", "KyoukaiProtocol", "kyoukai.backends.httptools_"),
    *[("kyoukai.backends.uwsgi", name, "kyoukai.backends.uwsgi") for name in ("uWSGIAdapter", "uwsgi_entry_point")],
]


class TestNames:
    @pytest.mark.parametrize(("module", "name", "home"), NAMES_22)
    def test_importable_from_its_22_module(self, module: str, name: str, home: str) -> None:
        assert getattr(importlib.import_module(module), name) is getattr(importlib.import_module(home), name)

    def test_the_events_are_those_the_signals_dispatch(self) -> None:
        assert HTTPRequestContext.route_matched.event_class is RouteMatchedEvent
        assert HTTPRequestContext.route_invoked.event_class is RouteInvokedEvent
        assert HTTPRequestContext.route_completed.event_class is RouteReturnedEvent
        assert KyoukaiBaseComponent.connection_made.event_class is ConnectionMadeEvent
        assert KyoukaiBaseComponent.connection_lost.event_class is ConnectionLostEvent
        assert all(issubclass(c, CtxEvent) for c in (RouteMatchedEvent, RouteInvokedEvent, RouteReturnedEvent))

    def test_the_http11_backend_names_its_protocol_class(self) -> None:
        backend = importlib.import_module("kyoukai.backends.httptools_")
        assert getattr(backend, backend.PROTOCOL_CLASS) is backend.KyoukaiProtocol

    def test_re_exports_are_documented_at_their_new_home_only(self) -> None:
        # The API reference documents each class once: where it is defined.
        for module, name, home in NAMES_22:
            obj = getattr(importlib.import_module(home), name)
            if isinstance(obj, type):
                assert obj.__module__ == home, f"{module}.{name}"


# The patterns of Kyoukai 2.2's own test suite, as it wrote them: a module-level test app
# finalized at import, dict headers, the environ of to_wsgi_environment patched by hand.
suite_app = TestKyoukai("kyoukai_test")
suite_app.finalize()


class TestThe22SuitePatterns:
    def test_route_adding(self) -> None:
        with suite_app.testing_bp() as bp:

            def _inner(ctx: HTTPRequestContext) -> None:
                pass

            rtt = bp.wrap_route(_inner)
            assert rtt.get_endpoint_name(bp) == bp.name + "._inner"
            rtt = bp.add_route(rtt, "/")
            bp.finalize()
            assert bp.finalized
            assert len(bp.routes) == 1
            environ = to_wsgi_environment({}, "GET", "/", "1.1")
            environ["SERVER_NAME"] = ""
            environ["SERVER_PORT"] = "4444"
            assert bp.match(environ)[0] == rtt
        assert len(suite_app.root.routes) == 0

    async def test_basic_request_and_post(self) -> None:
        with suite_app.testing_bp() as bp:

            @bp.route("/")
            def root(ctx: HTTPRequestContext) -> Response:
                return Response("Hello, world!")

            @bp.route("/", methods=["POST"])
            def root_body(ctx: HTTPRequestContext) -> Response:
                return Response(ctx.request.data[::-1])

            assert (await suite_app.inject_request({}, "/")).data == b"Hello, world!"
            posted = await suite_app.inject_request({}, "/", body="!dlrow ,olleH", method="POST")
            assert posted.data == b"Hello, world!"

    def test_wrap_response(self) -> None:
        assert (wrap_response(("Hello, world!",)).data, wrap_response(("Hello, world!",)).status_code) == (
            b"Hello, world!",
            200,
        )
        assert wrap_response(("a", 204)).status_code == 204
        r3 = wrap_response(("a", 401, {"Content-Type": "application/json"}))
        assert (r3.data, r3.status_code, r3.headers["Content-Type"]) == (b"a", 401, "application/json")

    async def test_get_formatted_response(self) -> None:
        from kyoukai import __version__

        with suite_app.testing_bp() as bp:

            @bp.route("/")
            def root(ctx: HTTPRequestContext) -> Response:
                return Response("Hello, world!")

            r = await suite_app.inject_request({}, "/")
            response = get_formatted_response(r, to_wsgi_environment({}, "GET", "/", "1.1"))
        version = __version__.encode()
        assert response == (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 13\r\n"
            b"Server: Kyoukai/%s\r\nX-Powered-By: Kyoukai/%s\r\n\r\nHello, world!" % (version, version)
        )


class RecordingContext(HTTPRequestContext):
    """A 2.2-style ``context_class``: subclasses ``kyoukai.asphalt.HTTPRequestContext`` and listens."""

    last: RecordingContext | None = None

    def __init__(self, parent: Context | None, request: Request) -> None:
        super().__init__(parent, request)
        self.events: list[Any] = []
        self.all_seen = asyncio.Event()  # listeners run after the dispatch, as tasks
        for signal in (self.route_matched, self.route_invoked, self.route_completed):
            signal.connect(self.record)
        type(self).last = self

    def record(self, event: Any) -> None:
        self.events.append(event)
        if len(self.events) == 3:
            self.all_seen.set()


class TestThe22DocSamples:
    """The samples of 2.2's documentation (Getting started, Blueprints, Hooks, Route groups...)."""

    async def test_routes_blueprints_errors_and_helpers(self, tmp_path: Path) -> None:
        template = tmp_path / "index.html"
        template.write_text("It's current year, and you're still using blocking code? Not <em>me!</em>")
        app = Kyoukai("my_app")

        @app.route("/")
        async def index(ctx):
            with open(template) as f:
                return as_html(f.read())

        @app.route("/path", methods=["GET", "POST"])
        async def some_route(ctx: HTTPRequestContext):
            return "made", 201, {"X-Made": "yes"}

        @app.route("/headers")
        async def my_route(ctx: HTTPRequestContext):
            return as_json(dict(ctx.request.headers))

        @app.route("/plain")
        async def plain(ctx):
            return as_plaintext("plain")

        @app.route("/abort")
        async def aborts(ctx):
            abort(404)

        my_blueprint = Blueprint("my_blueprint", prefix="/api/v1")

        @my_blueprint.route("/some/route")
        async def some_route_in_bp(ctx: HTTPRequestContext):
            return "Some route"

        @my_blueprint.route("/fails")
        async def fails(ctx):
            raise NameError("a")

        @my_blueprint.errorhandler(500)
        async def e500(ctx: HTTPRequestContext, err: HTTPException):
            return "Handled an error"

        app.register_blueprint(my_blueprint)
        my_other_blueprint = Blueprint("my_other_blueprint", prefix="/other")
        my_blueprint.add_child(my_other_blueprint)

        @my_other_blueprint.route("/inherits")
        async def inherits(ctx):
            raise NameError("b")

        client = TestKyoukai.wrap_existing_app(app)

        async def get(url: str, method: str = "GET") -> Response:
            return await client.inject_request({"Host": "example.com"}, url, method=method)

        assert "<em>me!</em>" in (await get("/")).get_data(as_text=True)
        made = await get("/path", "POST")
        assert (made.status_code, made.data, made.headers["X-Made"]) == (201, b"made", "yes")
        assert (await get("/headers")).get_json() == {"Host": "example.com"}
        assert (await get("/plain")).mimetype == "text/plain"
        assert (await get("/abort")).status_code == 404
        assert (await get("/api/v1/some/route")).data == b"Some route"
        for url in ("/api/v1/fails", "/api/v1/other/inherits"):
            handled = await get(url)
            assert (handled.status_code, handled.data) == (500, b"Handled an error")

    async def test_hooks(self) -> None:
        app = TestKyoukai("hooks")
        seen: list[str] = []

        async def print_request(ctx: HTTPRequestContext):
            seen.append(ctx.request.path)
            return ctx

        async def tag(ctx, response):
            response.headers["X-Tagged"] = "1"

        app.add_hook("pre", print_request)
        app.root.after_request(tag)

        @app.route("/")
        async def index(ctx):
            return "hooked"

        response = await app.inject_request({}, "/")
        assert (response.data, response.headers["X-Tagged"], seen) == (b"hooked", "1", ["/"])

    async def test_route_groups_in_both_forms(self) -> None:
        seen: list[str] = []

        class MyRouteGroup(metaclass=RouteGroupType, prefix="/api/v1"):
            def __init__(self, word: str) -> None:
                self.word = word

            @route("/heck", methods=("GET", "POST"))
            async def heck_em_up(self, ctx: HTTPRequestContext):
                return "get hecked " + self.word

            @route("/boom")
            async def boom(self, ctx):
                raise RuntimeError("boom")

            @errorhandler(500)
            async def handle_errors(self, ctx, exc):
                return "handled by the group", 500

            @before_request
            async def before_req(self, ctx):
                seen.append("group")

            @after_request
            async def after_req(self, ctx, response):
                response.headers["X-Group"] = self.word

            @heck_em_up.before_request
            async def whatever(self, ctx):
                seen.append("route " + self.word)

        app = TestKyoukai("groups")
        rg = MyRouteGroup("hard")
        app.root.add_route_group(rg)
        assert get_rg_bp(rg).prefix == "/api/v1"
        response = await app.inject_request({}, "/api/v1/heck", method="POST")
        assert (response.data, response.headers["X-Group"], seen) == (
            b"get hecked hard",
            "hard",
            ["group", "route hard"],
        )
        assert (await app.inject_request({}, "/api/v1/boom")).data == b"handled by the group"

    async def test_host_matching(self) -> None:
        app = TestKyoukai("my_website", host_matching=True)
        bp = Blueprint("api", host="api.myname.me")

        @bp.route("/")
        async def api_root(ctx):
            return "api"

        @app.route("/")
        async def site_root(ctx):
            return "site"

        app.register_blueprint(bp)
        assert (await app.inject_request({"Host": "api.myname.me"}, "/")).data == b"api"
        assert (await app.inject_request({"Host": "example.com"}, "/")).data == b"site"

    async def test_a_22_context_class_sees_the_22_events(self) -> None:
        app = TestKyoukai("events", context_class=RecordingContext)

        @app.route("/")
        async def index(ctx):
            return "evented"

        response = await app.inject_request({}, "/")
        ctx = RecordingContext.last
        assert ctx is not None
        await asyncio.wait_for(ctx.all_seen.wait(), 5)
        matched, invoked, returned = ctx.events
        assert isinstance(matched, RouteMatchedEvent) and isinstance(invoked, RouteInvokedEvent)
        assert isinstance(returned, RouteReturnedEvent) and returned.result is response
        assert all(isinstance(e, CtxEvent) and e.ctx is ctx for e in ctx.events)

    async def test_routing_samples_url_for(self) -> None:
        app = TestKyoukai("routing")
        api = Blueprint("api", prefix="/api")

        @api.route("/users")
        async def get_all_users(ctx):
            return "\n".join(
                [
                    ctx.url_for("api.get_all_users"),
                    ctx.url_for("api.something_with_users", methods=["POST"]),
                    ctx.url_for("api.get_all_users", force_external=True),
                    ctx.url_for("api.get_user", user_id=1),
                ]
            )

        @api.route("/users/new", methods=["POST"], endpoint="api.something_with_users")
        async def create_user(ctx):
            return "created"

        @api.route("/users/<int:user_id>")
        async def get_user(ctx, user_id: int):
            return str(user_id)

        app.register_blueprint(api)
        response = await app.inject_request({"Host": "example.com"}, "/api/users")
        assert response.get_data(as_text=True).split("\n") == [
            "/api/users",
            "/api/users/new",
            "http://example.com/api/users",
            "/api/users/1",
        ]

    async def test_chaining_routes_with_invoke_function(self) -> None:
        app = TestKyoukai("chain")
        calls: list[str] = []

        async def pre(ctx):
            calls.append("pre")

        async def post(ctx, response):
            response.headers["X-Post"] = "1"

        @app.route("/item/<int:n>")
        async def item(ctx, n: int):
            return f"item {n}"

        @app.route("/chained")
        async def chained(ctx):
            by_name = await item.invoke_function(ctx, [pre], [post], {"n": 1})
            positional = await item.invoke_function(ctx, [], [], [2])
            return by_name.get_data() + b", " + positional.get_data() + b" " + by_name.headers["X-Post"].encode()

        no_hooks = Route(lambda ctx: "bare", should_invoke_hooks=False)

        @app.route("/no-hooks")
        async def without_hooks(ctx):
            return await no_hooks.invoke_function(ctx, [pre], [post], {})

        assert (await app.inject_request({}, "/chained")).data == b"item 1, item 2 1"
        bare = await app.inject_request({}, "/no-hooks")
        assert (bare.data, "X-Post" in bare.headers, calls) == (b"bare", False, ["pre"])

    def test_config_file_component_reference(self) -> None:
        # The Asphalt usage page's config.yml: "type: kyoukai.asphalt:KyoukaiComponent".
        component = component_types.create_object(type="kyoukai.asphalt:KyoukaiComponent", app=f"{__name__}:docs_app")
        assert isinstance(component, KyoukaiComponent)
        assert component.app is docs_app

    def test_container_with_kyoukai_and_http2_components(self) -> None:
        class AppContainer(ContainerComponent):
            async def start(self, ctx: Context) -> None:
                self.add_component("kyoukai", KyoukaiComponent, ip="127.0.0.1", port=0, app=docs_app)
                self.add_component("h2", H2KyoukaiComponent, ip="127.0.0.1", port=0, app=docs_app)
                await super().start(ctx)

        container = AppContainer()
        server = RunningServer(container).start()
        try:
            ports = {alias: c.port for alias, c in container.child_components.items()}
            with httpx.Client() as http11, httpx.Client(http1=False, http2=True) as http2:
                first = http11.get(f"http://127.0.0.1:{ports['kyoukai']}/")
                second = http2.get(f"http://127.0.0.1:{ports['h2']}/")
        finally:
            server.stop()
        assert (first.http_version, first.text) == ("HTTP/1.1", "docs HTTP/1.1")
        assert (second.http_version, second.text) == ("HTTP/2", "docs HTTP/2")


docs_app = Kyoukai("docs")


@docs_app.route("/")
async def docs_index(ctx):
    return "docs " + ctx.environ["SERVER_PROTOCOL"]


def url_app() -> Kyoukai:
    app = Kyoukai("compat")

    @app.route("/users/<int:user_id>")
    async def user(ctx, user_id: int):
        return ctx.url_for("compat.user", user_id=user_id + 1, _external=True)

    @app.route("/secure-link")
    async def secure_link(ctx):
        return ctx.url_for("compat.user", user_id=1, _scheme="https")

    @app.route("/relative")
    async def relative(ctx):
        return ctx.url_for("compat.user", user_id=1)

    return app


class TestExternalUrls:
    def test_http11(self) -> None:
        with serve(url_app()) as server, httpx.Client() as client:
            own = client.get(server.url("/users/1"))
            named = client.get(server.url("/users/1"), headers={"Host": "example.com"})
            with_port = client.get(server.url("/users/1"), headers={"Host": "example.com:8080"})
            secure = client.get(server.url("/secure-link"), headers={"Host": "example.com"})
            relative = client.get(server.url("/relative"))
        assert own.text == f"http://127.0.0.1:{server.port}/users/2"
        assert named.text == "http://example.com/users/2"
        assert with_port.text == "http://example.com:8080/users/2"
        assert secure.text == "https://example.com/users/1"
        assert relative.text == "/users/1"

    def test_http2_cleartext(self) -> None:
        with serve(url_app(), http2=True) as server, httpx.Client(http1=False, http2=True) as client:
            response = client.get(server.url("/users/1"))
        assert response.http_version == "HTTP/2"
        assert response.text == f"http://127.0.0.1:{server.port}/users/2"

    @pytest.mark.parametrize("http2", [False, True])
    def test_over_tls_is_https(
        self, http2: bool, ssl_config: dict[str, Any], client_ssl_context: ssl.SSLContext
    ) -> None:
        with (
            serve(url_app(), ssl=ssl_config, http2=True) as server,
            httpx.Client(http2=http2, verify=client_ssl_context) as client,
        ):
            response = client.get(server.url("/users/1", "https"))
        assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
        assert response.text == f"https://127.0.0.1:{server.port}/users/2"

    async def test_host_matching(self) -> None:
        app = TestKyoukai("site", host_matching=True)
        api = Blueprint("api", host="api.example.com")

        @api.route("/v1")
        async def v1(ctx):
            return "v1"

        @app.route("/")
        async def index(ctx):
            return " ".join([ctx.url_for("site.index", _external=True), ctx.url_for("api.v1", _external=True)])

        app.register_blueprint(api)
        response = await app.inject_request({"Host": "www.example.com:8080"}, "/")
        assert response.data == b"http://www.example.com:8080/ http://api.example.com/v1"

    def test_behind_a_trusted_proxy(self) -> None:
        headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "www.example.org"}
        with serve(url_app(), forwarded_allow_ips=["127.0.0.1"]) as server, httpx.Client() as client:
            response = client.get(server.url("/users/1"), headers=headers)
        assert response.text == "https://www.example.org/users/2"


class TestUwsgi:
    def test_adapter_names_the_gunicorn_worker_and_command(self) -> None:
        from kyoukai.backends.uwsgi import uWSGIAdapter

        with pytest.raises(RuntimeError, match="uWSGI") as raised:
            uWSGIAdapter(docs_app)
        assert "gunicorn -k kyoukai.backends.gunicorn.KyoukaiWorker myapp:app" in str(raised.value)
        with pytest.raises(RuntimeError) as raised:
            uWSGIAdapter.from_asphalt_config("config.yml")
        assert "gunicorn -k kyoukai.backends.gunicorn.KyoukaiWorker config.yml" in str(raised.value)

    def test_entry_point_decorator_raises_when_used(self) -> None:
        from kyoukai.backends.uwsgi import uwsgi_entry_point

        async def enter(self, request):
            return None

        with pytest.raises(RuntimeError, match="KyoukaiWorker"):
            uwsgi_entry_point(enter)

    def test_the_named_worker_class_and_command_exist(self) -> None:
        from kyoukai.backends.gunicorn import KyoukaiWorker
        from kyoukai.backends.uwsgi import WORKER_CLASS

        module, _, name = WORKER_CLASS.rpartition(".")
        assert getattr(importlib.import_module(module), name) is KyoukaiWorker
        assert f"gunicorn -k {WORKER_CLASS}" in (ROOT / "docs" / "deploying.rst").read_text()


async def test_app_run_sample_starts_a_server() -> None:
    # Getting started ends with app.run(); Kyoukai.start() is its in-loop form.
    app = Kyoukai("started")

    @app.route("/")
    async def index(ctx):
        return "started"

    context = Context()
    await app.start("127.0.0.1", 0, base_context=context)
    try:
        assert isinstance(app.component, KyoukaiComponent)
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{app.component.port}/")
        assert response.text == "started"
    finally:
        await asyncio.wait_for(context.close(), 10)
