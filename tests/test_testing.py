"""The test helpers of kyoukai.testing, and what every response carries."""

from __future__ import annotations

import json

import pytest
from asphalt.core import Context
from werkzeug.wrappers import Response

from kyoukai import Blueprint, Kyoukai
from kyoukai.testing import TestKyoukai
from kyoukai.util import SERVER_TOKEN
from kyoukai.version import __version__


@pytest.fixture
def app() -> TestKyoukai:
    app = TestKyoukai("app")

    @app.route("/")
    async def index(ctx):
        return "index"

    return app


class TestTestingBp:
    async def test_swaps_the_root_and_restores_it(self, app: TestKyoukai) -> None:
        original = app.root
        with app.testing_bp() as bp:
            assert isinstance(bp, Blueprint)
            assert app.root is bp and bp is not original

            @bp.route("/only-in-test")
            async def only(ctx):
                return "test route"

            assert (await app.inject_request({}, "/only-in-test")).get_data() == b"test route"
            assert (await app.inject_request({}, "/")).status_code == 404
        assert app.root is original
        assert (await app.inject_request({}, "/")).get_data() == b"index"
        assert (await app.inject_request({}, "/only-in-test")).status_code == 404

    def test_restores_after_an_exception(self, app: TestKyoukai) -> None:
        original = app.root
        with pytest.raises(RuntimeError), app.testing_bp():
            raise RuntimeError("test failed")
        assert app.root is original


class TestWrapExistingApp:
    async def test_shares_routes_and_config(self) -> None:
        real = Kyoukai("real", server_name="real.example.com", server_header=False, custom="value")

        @real.route("/hello")
        async def hello(ctx):
            return f"{ctx.app.config['custom']} {ctx.app.name}"

        wrapped = TestKyoukai.wrap_existing_app(real)
        assert isinstance(wrapped, TestKyoukai)
        assert wrapped.root is real.root
        assert wrapped.server_name == "real.example.com"
        response = await wrapped.inject_request({}, "/hello")
        assert response.get_data() == b"value real"
        assert "Server" not in response.headers

    async def test_keeps_the_request_response_and_context_classes(self) -> None:
        from kyoukai import HTTPRequestContext

        class MyResponse(Response):
            pass

        class MyContext(HTTPRequestContext):
            pass

        real = Kyoukai("real", response_class=MyResponse, context_class=MyContext)

        @real.route("/")
        async def index(ctx):
            return type(ctx).__name__

        wrapped = TestKyoukai.wrap_existing_app(real)
        response = await wrapped.inject_request({}, "/")
        assert type(response) is MyResponse
        assert response.get_data() == b"MyContext"

    async def test_base_context(self) -> None:
        real = Kyoukai("real")

        @real.route("/")
        async def index(ctx):
            return ctx.get_resource(str, "greeting")

        base = Context()
        base.add_resource("hi from base", "greeting")
        wrapped = TestKyoukai.wrap_existing_app(real, base_context=base)
        assert (await wrapped.inject_request({}, "/")).get_data() == b"hi from base"


class TestRequestBodies:
    async def test_json_body(self) -> None:
        app = TestKyoukai("app")

        @app.route("/echo", methods=["POST"])
        async def echo(ctx):
            data = ctx.request.get_json()
            return json.dumps({"got": data, "len": ctx.request.content_length}), 200

        body = json.dumps({"a": [1, 2, 3], "b": "é"})
        response = await app.inject_request({"Content-Type": "application/json"}, "/echo", "POST", body=body)
        assert json.loads(response.get_data()) == {"got": {"a": [1, 2, 3], "b": "é"}, "len": len(body.encode())}

    async def test_invalid_json_is_a_400(self) -> None:
        app = TestKyoukai("app")

        @app.route("/echo", methods=["POST"])
        async def echo(ctx):
            return str(ctx.request.get_json())

        response = await app.inject_request({"Content-Type": "application/json"}, "/echo", "POST", body=b"{nope")
        assert response.status_code == 400

    async def test_url_encoded_form(self) -> None:
        app = TestKyoukai("app")

        @app.route("/form", methods=["POST"])
        async def form(ctx):
            return ",".join(f"{k}={v}" for k, v in sorted(ctx.request.form.items(multi=True)))

        response = await app.inject_request(
            [("Content-Type", "application/x-www-form-urlencoded")], "/form", "POST", body="b=2&a=1&a=3&c=%C3%A9"
        )
        assert response.get_data().decode() == "a=1,a=3,b=2,c=é"

    async def test_multipart_form(self) -> None:
        app = TestKyoukai("app")

        uploads = []

        @app.route("/upload", methods=["POST"])
        async def upload(ctx):
            file = ctx.request.files["file"]
            uploads.append(file)
            return f"{ctx.request.form['name']}:{file.filename}:{file.read().decode()}"

        body = (
            "--XYZ\r\n"
            'Content-Disposition: form-data; name="name"\r\n\r\n'
            "report\r\n"
            "--XYZ\r\n"
            'Content-Disposition: form-data; name="file"; filename="r.txt"\r\n'
            "Content-Type: text/plain\r\n\r\n"
            "contents\r\n"
            "--XYZ--\r\n"
        )
        response = await app.inject_request(
            {"Content-Type": "multipart/form-data; boundary=XYZ"}, "/upload", "POST", body=body
        )
        assert response.get_data() == b"report:r.txt:contents"
        assert uploads[0].stream.closed, "uploaded files are released with the request"

    async def test_raw_body_and_query(self) -> None:
        app = TestKyoukai("app")

        @app.route("/raw", methods=["PUT"])
        async def raw(ctx):
            return ctx.request.get_data() + ctx.request.args["q"].encode()

        response = await app.inject_request({}, "/raw?q=%21", "PUT", body=b"\x00bytes")
        assert response.get_data() == b"\x00bytes!"


class TestServerHeaders:
    async def test_present_by_default(self, app: TestKyoukai) -> None:
        response = await app.inject_request({}, "/")
        assert response.headers["Server"] == f"Kyoukai/{__version__}" == SERVER_TOKEN
        assert response.headers["X-Powered-By"] == SERVER_TOKEN

    async def test_present_on_error_and_automatic_responses(self, app: TestKyoukai) -> None:
        @app.route("/post", methods=["POST"])
        async def post(ctx):
            return "x"

        @app.route("/crash")
        async def crash(ctx):
            raise ValueError("crash")

        for method, url in (("GET", "/missing"), ("GET", "/post"), ("OPTIONS", "/post"), ("GET", "/crash")):
            response = await app.inject_request({}, url, method)
            assert response.status_code != 200
            assert response.headers["Server"] == SERVER_TOKEN, url
            assert response.headers["X-Powered-By"] == SERVER_TOKEN, url

    async def test_handler_cannot_duplicate_them(self, app: TestKyoukai) -> None:
        @app.route("/own")
        async def own(ctx):
            return "x", 200, {"Server": "Mine"}

        response = await app.inject_request({}, "/own")
        # One Server field (RFC 9110 section 10.2.4): the app's own, not a second one.
        assert response.headers.getlist("Server") == ["Mine"]

    async def test_removed_with_server_header_false(self) -> None:
        app = TestKyoukai("x", server_header=False)

        @app.route("/")
        async def index(ctx):
            return "index"

        for url in ("/", "/missing"):
            response = await app.inject_request({}, url)
            assert "Server" not in response.headers
            assert "X-Powered-By" not in response.headers
        assert app.config["server_header"] is False
