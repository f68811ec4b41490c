"""The per-request HTTPRequestContext: attributes, signals, resources and asphalt 4.12 cleanliness."""

from __future__ import annotations

import asyncio
import warnings

import pytest
from asphalt.core import Context, current_context, get_resource
from werkzeug.routing import Rule
from werkzeug.wrappers import Request

from kyoukai import Blueprint, HTTPRequestContext, Kyoukai
from kyoukai.events import RouteInvokedEvent, RouteMatchedEvent, RouteReturnedEvent
from kyoukai.testing import TestKyoukai
from kyoukai.wsgi import to_wsgi_environment


class RecordingContext(HTTPRequestContext):
    """Connects to its own signals and resolves a future per signal."""

    instances: list[RecordingContext] = []

    def __init__(self, parent: Context | None, request: Request) -> None:
        super().__init__(parent, request)
        loop = asyncio.get_running_loop()
        self.events = {name: loop.create_future() for name in ("route_matched", "route_invoked", "route_completed")}
        for name, future in self.events.items():
            getattr(self, name).connect(lambda event, future=future: future.done() or future.set_result(event))
        type(self).instances.append(self)


@pytest.fixture
def app() -> TestKyoukai:
    app = TestKyoukai("app")
    child = Blueprint("child", prefix="/child")
    app.register_blueprint(child)

    @child.route("/item/<int:n>")
    async def item(ctx, n):
        return ctx.url_for("child.item", n=n + 1)

    return app


class TestAttributes:
    async def test_context_attributes(self, app: TestKyoukai) -> None:
        seen = {}

        @app.route("/info/<name>")
        async def info(ctx, name):
            seen.update(
                ctx=ctx,
                app=ctx.app,
                request=ctx.request,
                params=ctx.params,
                route=ctx.route,
                bp=ctx.bp,
                rule=ctx.rule,
                environ=ctx.environ,
                proto=ctx.proto,
                current=current_context(),
            )
            return name

        await app.inject_request({"Host": "localhost"}, "/info/abc?x=1")
        ctx = seen["ctx"]
        assert isinstance(ctx, HTTPRequestContext)
        assert seen["app"] is app
        assert isinstance(seen["request"], Request)
        assert seen["request"].args["x"] == "1"
        assert seen["params"] == {"name": "abc"}
        assert seen["route"] is app.root.get_route("app.info")
        assert seen["bp"] is app.root
        assert isinstance(seen["rule"], Rule) and seen["rule"].rule == "/info/<name>"
        assert seen["environ"] is seen["request"].environ
        assert seen["proto"] is None
        assert seen["current"] is ctx
        assert ctx.closed, "the context is closed when the request is done"

    async def test_proto_is_the_environ_protocol(self) -> None:
        protocol = object()
        environ = to_wsgi_environment([], "GET", "/", "1.1", protocol=protocol)
        ctx = HTTPRequestContext(None, Request(environ))
        assert ctx.proto is protocol
        assert ctx.params is None and ctx.route is None

    async def test_url_for_on_ctx(self, app: TestKyoukai) -> None:
        response = await app.inject_request({"Host": "localhost"}, "/child/item/1")
        assert response.get_data() == b"/child/item/2"

    async def test_context_class_is_used(self) -> None:
        class MyContext(HTTPRequestContext):
            pass

        app = TestKyoukai("app", context_class=MyContext)

        @app.route("/")
        async def index(ctx):
            return type(ctx).__name__

        assert (await app.inject_request({}, "/")).get_data() == b"MyContext"

    async def test_teardown_callbacks_run_after_the_handler(self) -> None:
        app = TestKyoukai("app")
        order = []

        @app.route("/")
        async def index(ctx):
            ctx.add_teardown_callback(lambda: order.append("teardown"))
            order.append("handler")
            return "x"

        await app.inject_request({}, "/")
        assert order == ["handler", "teardown"]


class TestSignals:
    @pytest.fixture
    def recording_app(self) -> TestKyoukai:
        RecordingContext.instances = []
        app = TestKyoukai("app", context_class=RecordingContext)

        @app.route("/ok/<int:n>")
        async def ok(ctx, n):
            return str(n), 201

        @app.route("/fail")
        async def fail(ctx):
            raise ValueError("fail")

        return app

    async def test_route_signals_fire_in_order(self, recording_app: TestKyoukai) -> None:
        response = await recording_app.inject_request({}, "/ok/5")
        (ctx,) = RecordingContext.instances
        matched, invoked, completed = await asyncio.wait_for(asyncio.gather(*ctx.events.values()), 5)
        assert isinstance(matched, RouteMatchedEvent)
        assert isinstance(invoked, RouteInvokedEvent)
        assert isinstance(completed, RouteReturnedEvent)
        assert matched.ctx is ctx and invoked.ctx is ctx and completed.ctx is ctx
        assert matched.source is ctx
        assert (matched.topic, invoked.topic, completed.topic) == ("route_matched", "route_invoked", "route_completed")
        assert matched.time <= invoked.time <= completed.time
        assert completed.result is response
        assert completed.result.status_code == 201

    async def test_no_route_no_matched_signal(self, recording_app: TestKyoukai) -> None:
        assert (await recording_app.inject_request({}, "/missing")).status_code == 404
        (ctx,) = RecordingContext.instances
        assert not any(future.done() for future in ctx.events.values())

    async def test_failing_route_is_matched_and_invoked_but_not_completed(
        self, recording_app: TestKyoukai, caplog: pytest.LogCaptureFixture
    ) -> None:
        assert (await recording_app.inject_request({}, "/fail")).status_code == 500
        (ctx,) = RecordingContext.instances
        await asyncio.wait_for(asyncio.gather(ctx.events["route_matched"], ctx.events["route_invoked"]), 5)
        assert not ctx.events["route_completed"].done()

    def test_signals_are_declared_on_the_class(self) -> None:
        assert HTTPRequestContext.route_matched.event_class is RouteMatchedEvent
        assert HTTPRequestContext.route_invoked.event_class is RouteInvokedEvent
        assert HTTPRequestContext.route_completed.event_class is RouteReturnedEvent


class TestResources:
    async def test_parent_context_resources_reach_the_handler(self) -> None:
        base = Context()
        base.add_resource("a greeting", "greeting")
        base.add_resource(42, "answer", types=int)
        app = TestKyoukai("app", base_context=base)
        seen = {}

        @app.route("/")
        async def index(ctx):
            seen["parent"] = ctx.parent
            seen["module_level"] = get_resource(int, "answer")
            return ctx.get_resource(str, "greeting")

        response = await app.inject_request({}, "/")
        assert response.get_data() == b"a greeting"
        assert seen == {"parent": base, "module_level": 42}
        assert not base.closed

    async def test_process_request_with_an_entered_parent_context(self) -> None:
        app = Kyoukai("app")

        @app.route("/")
        async def index(ctx):
            return ctx.require_resource(str, "name")

        async with Context() as base:
            base.add_resource("from the component", "name")
            environ = to_wsgi_environment([("Host", "localhost")], "GET", "/", "1.1")
            response = await app.process_request(Request(environ), base)
        assert response.get_data() == b"from the component"


class TestNoDeprecationWarnings:
    async def test_requests_emit_no_deprecation_warning(self, app: TestKyoukai) -> None:
        base = Context()
        base.add_resource("x", "thing")
        wrapped = TestKyoukai.wrap_existing_app(app, base_context=base)

        @app.route("/res")
        async def res(ctx):
            return ctx.get_resource(str, "thing")

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for url in ("/child/item/1", "/res", "/missing", "/child/item/x"):
                await wrapped.inject_request({"Host": "localhost"}, url)
            await wrapped.inject_request({}, "/res", "OPTIONS")
            HTTPRequestContext(base, Request(to_wsgi_environment([], "GET", "/", "1.1")))
        assert [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)] == []


class TestServerName:
    def test_the_apps_server_name_wins(self) -> None:
        from kyoukai import KyoukaiComponent

        app = Kyoukai("named", server_name="example.test")
        assert KyoukaiComponent(app).get_server_name() == "example.test"

    def test_host_name_looked_up_on_first_use_only(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import socket

        from kyoukai import KyoukaiComponent

        lookups: list[int] = []

        def fake_getfqdn(name: str = "") -> str:
            lookups.append(1)
            return "host.example.test"

        monkeypatch.setattr(socket, "getfqdn", fake_getfqdn)
        component = KyoukaiComponent(Kyoukai("unnamed"))
        assert lookups == []  # not at construction: it is a blocking DNS query
        assert component.get_server_name() == "host.example.test"
        assert component.get_server_name() == "host.example.test"
        assert lookups == [1]
