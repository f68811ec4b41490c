"""
The recipes of docs/recipes.rst, from examples/recipes/: Jinja2 templates, signed-cookie
sessions, CORS, file uploads and a single-page app.
"""

from __future__ import annotations

import importlib
import sys
from http.cookies import SimpleCookie
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from conftest import serve
from itsdangerous import URLSafeTimedSerializer

from kyoukai.testing import TestKyoukai

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 10.0


def recipe(name: str) -> ModuleType:
    """A module of examples/recipes (the repository root is put on the import path if needed)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(f"examples.recipes.{name}")


def app_of(name: str) -> TestKyoukai:
    return TestKyoukai.wrap_existing_app(recipe(name).app)


async def body_of(response) -> bytes:
    """The body of a response, streamed (a file) or not."""
    if hasattr(response.response, "__aiter__"):
        return b"".join([chunk async for chunk in response.response])
    return response.get_data()


class TestTemplates:
    async def test_user_input_is_escaped(self) -> None:
        app = app_of("templating")
        response = await app.inject_request({}, "/hello?name=%3Cscript%3Ealert(1)%3C/script%3E")
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        page = response.get_data(as_text=True)
        assert "<h1>Hello, &lt;script&gt;alert(1)&lt;/script&gt;!</h1>" in page
        assert "<script>" not in page
        # The base template is there too.
        assert page.startswith("<!doctype html>") and "<footer>You asked for /hello</footer>" in page

    async def test_plain_name_and_error_page(self) -> None:
        app = app_of("templating")
        page = (await app.inject_request({}, "/hello?name=Ada")).get_data(as_text=True)
        assert "<title>Hello, Ada</title>" in page
        missing = await app.inject_request({}, "/nope%3Cb%3E")
        assert missing.status_code == 404
        assert "You asked for /nope&lt;b&gt;" in missing.get_data(as_text=True)


def set_cookie(response) -> SimpleCookie:
    """The ``session`` cookie a response sets (a :class:`SimpleCookie` holding it)."""
    headers = response.headers.getlist("Set-Cookie")
    assert len(headers) == 1, headers
    cookie = SimpleCookie()
    cookie.load(headers[0])
    assert "session" in cookie
    return cookie


class TestSessions:
    async def test_the_session_round_trips_in_a_signed_cookie(self) -> None:
        app = app_of("sessions")
        first = await app.inject_request({}, "/")
        assert first.get_json() == {"visits": 1, "user": None}
        cookie = set_cookie(first)["session"]
        assert cookie["httponly"] is True and cookie["samesite"] == "Lax" and cookie["path"] == "/"
        assert not cookie["secure"], "Secure is for HTTPS"
        assert "Cookie" in first.headers["Vary"]
        second = await app.inject_request({"Cookie": f"session={cookie.value}"}, "/")
        assert second.get_json() == {"visits": 2, "user": None}

    async def test_a_tampered_cookie_gives_an_empty_session(self) -> None:
        app = app_of("sessions")
        value = set_cookie(await app.inject_request({}, "/"))["session"].value
        payload, _, signature = value.partition(".")
        forged_payload = URLSafeTimedSerializer("guess", salt="kyoukai-session").dumps({"visits": 99, "user": "root"})
        for forged in (
            forged_payload,  # signed with another key
            value[:-2] + ("AA" if value[-2:] != "AA" else "BB"),  # signature changed
            "e30" + value[len(payload) :],  # payload swapped for {}
            "not a cookie",
        ):
            response = await app.inject_request({"Cookie": f"session={forged}"}, "/")
            assert response.get_json() == {"visits": 1, "user": None}, forged

    async def test_login_and_logout(self) -> None:
        app = app_of("sessions")
        login = await app.inject_request(
            {"Content-Type": "application/x-www-form-urlencoded"}, "/login", "POST", "user=ada"
        )
        cookie = set_cookie(login)["session"].value
        assert (await app.inject_request({"Cookie": f"session={cookie}"}, "/")).get_json()["user"] == "ada"
        logout = await app.inject_request({"Cookie": f"session={cookie}"}, "/logout", "POST")
        assert logout.status_code == 204
        deleted = set_cookie(logout)["session"]
        assert deleted.value == "" and deleted["max-age"] == "0"
        # Nothing changed, nothing sent.
        unchanged = await app.inject_request({}, "/logout", "POST")
        assert unchanged.headers.getlist("Set-Cookie") == []

    def test_secure_over_https(self, ssl_config, client_ssl_context) -> None:
        app = recipe("sessions").app
        with serve(app, ssl=ssl_config) as server:
            with httpx.Client(verify=client_ssl_context, timeout=TIMEOUT) as client:
                first = client.get(server.url("/", "https"))
                assert "secure" in first.headers["set-cookie"].lower()
                assert client.get(server.url("/", "https")).json()["visits"] == 2


class TestCORS:
    ALLOWED = "http://localhost:5173"

    async def test_an_allowed_origin(self) -> None:
        app = app_of("cors")
        response = await app.inject_request({"Origin": self.ALLOWED}, "/api/items")
        assert response.status_code == 200
        assert response.headers["Access-Control-Allow-Origin"] == self.ALLOWED
        assert "Origin" in response.headers["Vary"]

    async def test_other_origins_get_no_header(self) -> None:
        app = app_of("cors")
        for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"}, {}):
            response = await app.inject_request(headers, "/api/items")
            assert response.status_code == 200
            assert "Access-Control-Allow-Origin" not in response.headers, headers

    async def test_preflight(self) -> None:
        app = app_of("cors")
        preflight = {
            "Origin": self.ALLOWED,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        }
        response = await app.inject_request(preflight, "/api/items", "OPTIONS")
        assert response.status_code == 204
        assert response.headers["Allow"] == "GET, HEAD, OPTIONS, POST"
        assert response.headers["Access-Control-Allow-Methods"] == "GET, HEAD, OPTIONS, POST"
        assert "Content-Type" in response.headers["Access-Control-Allow-Headers"]
        assert response.headers["Access-Control-Max-Age"] == "600"
        assert response.headers["Access-Control-Allow-Origin"] == self.ALLOWED
        refused = await app.inject_request({**preflight, "Origin": "https://evil.example"}, "/api/items", "OPTIONS")
        assert refused.status_code == 204
        assert not [name for name in refused.headers.keys() if name.startswith("Access-Control-")]

    async def test_errors_carry_the_header(self) -> None:
        app = app_of("cors")
        for method in ("GET", "OPTIONS"):
            response = await app.inject_request({"Origin": self.ALLOWED}, "/api/nothing-here", method)
            assert response.status_code == 404, method
            assert response.headers["Access-Control-Allow-Origin"] == self.ALLOWED
        wrong_method = await app.inject_request({"Origin": self.ALLOWED}, "/api/items", "DELETE")
        assert wrong_method.status_code == 405
        assert wrong_method.headers["Access-Control-Allow-Origin"] == self.ALLOWED
        assert "GET" in wrong_method.headers["Allow"]

    def test_over_the_wire(self) -> None:
        with serve(recipe("cors").app, http2=True) as server:
            with httpx.Client(http1=False, http2=True, timeout=TIMEOUT) as client:
                response = client.post(server.url("/api/items"), json={"name": "cup"}, headers={"Origin": self.ALLOWED})
                assert response.status_code == 201
                assert response.headers["access-control-allow-origin"] == self.ALLOWED


class TestUploads:
    def test_upload_and_download(self, tmp_path: Path) -> None:
        folder = tmp_path / "uploads"
        with serve(recipe("uploads").app, upload_dir=str(folder)) as server:
            with httpx.Client(timeout=TIMEOUT) as client:
                files = [
                    ("file", ("notes.txt", b"first file\n", "text/plain")),
                    ("file", ("../../evil.html", b"<script>alert(1)</script>", "text/html")),
                ]
                response = client.post(server.url("/upload"), files=files)
                assert response.status_code == 201
                assert response.json() == {
                    "saved": [{"name": "notes.txt", "size": 11}, {"name": "evil.html", "size": 25}]
                }
                assert sorted(p.name for p in folder.iterdir()) == ["evil.html", "notes.txt"]
                assert not (tmp_path / "evil.html").exists()
                download = client.get(server.url("/uploads/evil.html"))
                assert download.content == b"<script>alert(1)</script>"
                assert download.headers["content-disposition"] == "attachment"
                assert download.headers["x-content-type-options"] == "nosniff"
                assert client.get(server.url("/uploads/missing.txt")).status_code == 404
                assert client.post(server.url("/upload"), data={"other": "x"}).status_code == 400

    def test_the_body_limit(self, tmp_path: Path) -> None:
        folder = tmp_path / "uploads"
        with serve(recipe("uploads").app, upload_dir=str(folder), max_body_size=64 * 1024) as server:
            with httpx.Client(timeout=TIMEOUT) as client:
                small = client.post(server.url("/upload"), files={"file": ("a.bin", b"a" * 1000)})
                assert small.status_code == 201
                big = client.post(server.url("/upload"), files={"file": ("b.bin", b"b" * 100_000)})
                assert big.status_code == 413
        assert sorted(p.name for p in folder.iterdir()) == ["a.bin"]


class TestSinglePageApp:
    async def test_pages_assets_and_api(self) -> None:
        app = app_of("spa")
        index = (recipe("spa").DIST / "index.html").read_bytes()
        for path in ("/", "/settings", "/settings/profile", "/users/12"):
            response = await app.inject_request({}, path)
            assert response.status_code == 200, path
            assert response.headers["Content-Type"] == "text/html; charset=utf-8"
            assert response.headers["Cache-Control"] == "no-cache"
            assert await body_of(response) == index, path
        script = await app.inject_request({}, "/assets/app.9c3f7a.js")
        assert script.status_code == 200
        assert script.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert "javascript" in script.headers["Content-Type"]
        await body_of(script)
        robots = await app.inject_request({}, "/robots.txt")
        assert (robots.status_code, (await body_of(robots)).startswith(b"User-agent")) == (200, True)
        assert (await app.inject_request({}, "/assets/gone.js")).status_code == 404
        api = await app.inject_request({}, "/api/hello")
        assert api.get_json() == {"message": "Hello from the API"}
        missing = await app.inject_request({}, "/api/nope")
        assert (missing.status_code, missing.get_json()) == (404, {"error": "There is no API endpoint /api/nope."})
        assert (await app.inject_request({}, "/settings", "POST")).status_code == 405

    def test_over_the_wire(self) -> None:
        with serve(recipe("spa").app, http2=True) as server:
            for http2 in (False, True):
                with httpx.Client(http1=not http2, http2=http2, timeout=TIMEOUT) as client:
                    page = client.get(server.url("/settings/profile"))
                    assert page.status_code == 200 and '<div id="app">' in page.text
                    again = client.get(server.url("/settings/profile"), headers={"If-None-Match": page.headers["etag"]})
                    assert again.status_code == 304
                    assert client.get(server.url("/api/nope")).status_code == 404
