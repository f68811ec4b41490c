"""
The documentation: it builds without a warning, every code sample comes from examples/, the
samples do what the docs say, and every setting is documented with its default.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import docutils.core
import httpx
import pytest
from conftest import RunningServer, serve
from ruamel.yaml import YAML
from werkzeug.datastructures import WWWAuthenticate

from kyoukai.asphalt import KyoukaiComponent
from kyoukai.settings import ServerSettings
from kyoukai.testing import TestKyoukai

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
TIMEOUT = 10.0


def example(module: str) -> Any:
    """A module of examples/ (the repository root is put on the import path if needed)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(f"examples.{module}")


def guide(name: str) -> Any:
    """A module of examples/guide."""
    return example(f"guide.{name}")


def rst_files() -> list[Path]:
    return sorted(DOCS.glob("*.rst"))


async def get(app, url: str, method: str = "GET", headers: dict | None = None, body: bytes | None = None):
    return await TestKyoukai.wrap_existing_app(app).inject_request(headers or {}, url, method, body)


class TestBuild:
    def test_sphinx_build_has_no_warnings(self, tmp_path: Path) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "WARNING" not in result.stderr, result.stderr
        for page in ("index", "http2", "limits", "api", "migrating"):
            assert (tmp_path / f"{page}.html").is_file()
        # The API reference holds autodoc output, not just headings.
        api = (tmp_path / "api.html").read_text()
        assert 'id="kyoukai.backends.http2.H2KyoukaiComponent"' in api
        assert 'id="kyoukai.settings.ServerSettings"' in api


class TestSamples:
    """Every sample is a literalinclude of a file in examples/ (which the tests run)."""

    def test_no_inline_code(self) -> None:
        inline = re.compile(r"^\s*\.\. (code-block|code|sourcecode)::\s*(\w+)?", re.M)
        for path in rst_files():
            for match in inline.finditer(path.read_text()):
                assert match.group(2) in ("console", "text"), (
                    f"{path.name}: an inline {match.group(2) or 'code'} block; put the sample in "
                    f"examples/ and literalinclude it"
                )
            # A paragraph ending in "::" starts an untested literal block.
            assert not re.search(r"\S::\s*\n\s*\n\s+\S", path.read_text()), f"{path.name} has a '::' literal block"

    def test_includes_come_from_examples(self) -> None:
        include = re.compile(r"^\s*\.\. literalinclude::\s*(\S+)", re.M)
        used: set[Path] = set()
        for path in rst_files():
            for target in include.findall(path.read_text()):
                resolved = (DOCS / target).resolve()
                assert resolved.is_relative_to(EXAMPLES), f"{path.name} includes {target}, outside examples/"
                assert resolved.is_file(), f"{path.name} includes {target}, which does not exist"
                used.add(resolved)
        for folder in (
            "hello",
            "http2",
            "side_by_side",
            "json_api",
            "files",
            "sse",
            "tls",
            "deploy",
            "static",
            "recipes",
            "cli",
            "websocket",
            "chat",
        ):
            assert any(p.is_relative_to(EXAMPLES / folder) for p in used), f"examples/{folder} is not in the docs"

    def test_console_commands_name_real_things(self) -> None:
        text = "\n".join(p.read_text() for p in rst_files())
        for module in re.findall(r"python -m ([\w.]+)", text):
            if module.startswith("kyoukai"):
                path = ROOT / module.replace(".", "/")
                assert path.with_suffix(".py").is_file() or (path / "__main__.py").is_file(), module
        for config in re.findall(r"asphalt run (?:--loop uvloop )?(examples/\S+\.yml)", text):
            assert (ROOT / config).is_file(), config


class TestLimitsPage:
    def test_every_setting_with_its_default(self) -> None:
        page = (DOCS / "limits.rst").read_text()
        rows = dict(re.findall(r"^\s*\* - ``(\w+)``\n\s*- ``([^`]+)``", page, re.M))
        for field in dataclasses.fields(ServerSettings):
            assert field.name in rows, f"limits.rst has no row for {field.name}"
            assert rows[field.name] == repr(field.default), (
                f"limits.rst gives {field.name} the default {rows[field.name]}, the code {field.default!r}"
            )
        assert set(rows) == {f.name for f in dataclasses.fields(ServerSettings)}, "rows for settings that do not exist"

    def test_options_file_lists_every_option_at_its_default(self) -> None:
        config = YAML(typ="safe").load((EXAMPLES / "guide" / "options.yml").read_text())["component"]
        for field in dataclasses.fields(ServerSettings):
            assert config[field.name] == field.default, field.name
        cfg = {k: v for k, v in config.items() if k not in ("type", "app")}
        component = KyoukaiComponent(example("hello.app").app, **cfg)
        assert component.settings == ServerSettings()
        assert (component.http2, component.ssl_enabled, component.run_server) == (False, False, True)


class TestRouting:
    async def test_rules_and_converters(self) -> None:
        app = guide("routing").app
        assert (await get(app, "/")).get_data(as_text=True) == "The index page"
        assert (await get(app, "/about")).get_data(as_text=True) == "A plain function"
        assert (await get(app, "/users/12")).get_data(as_text=True) == "User number 12"
        assert (await get(app, "/users/twelve")).status_code == 404
        assert (await get(app, "/docs/a/b/c")).get_data(as_text=True) == "Page a/b/c"
        order = "5e4cbd0c-6b2c-4c7a-9a0e-3b2b5c0e1f00"
        assert (await get(app, f"/orders/{order}")).get_data(as_text=True) == f"Order {order.replace('-', '')}"
        assert (await get(app, "/colour/green")).get_data(as_text=True) == "You picked green"
        assert (await get(app, "/colour/pink")).status_code == 404
        assert (await get(app, "/shout/hey")).get_data(as_text=True) == "HEY!"

    async def test_methods_and_many_urls(self) -> None:
        app = guide("routing").app
        created = await get(app, "/items", "POST")
        assert (created.status_code, created.get_data(as_text=True)) == (201, "created")
        assert (await get(app, "/items/4", "DELETE")).get_data(as_text=True) == "DELETE item 4"
        refused = await get(app, "/items/4")
        assert refused.status_code == 405
        assert set(refused.headers["Allow"].split(", ")) == {"PUT", "DELETE"}
        options = await get(app, "/items/4", "OPTIONS")
        assert set(options.headers["Allow"].split(", ")) == {"PUT", "DELETE", "OPTIONS"}
        assert (await get(app, "/page")).get_data(as_text=True) == "Page 1"
        assert (await get(app, "/page/9")).get_data(as_text=True) == "Page 9"

    async def test_return_values_and_url_for(self) -> None:
        app = guide("routing").app
        teapot = await get(app, "/teapot")
        assert (teapot.status_code, teapot.headers["X-Tea"]) == (418, "Earl Grey")
        empty = await get(app, "/empty")
        assert (empty.status_code, empty.get_data()) == (204, b"")
        data = await get(app, "/data")
        assert (data.mimetype, data.get_json()) == ("application/json", {"answer": 42})
        created = await get(app, "/created-json", method="POST")
        assert (created.status_code, created.headers["Location"], created.get_json()) == (201, "/items/7", {"id": 7})
        assert (await get(app, "/pretty")).get_data(as_text=True) == '{\n  "answer": 42\n}'
        links = (await get(app, "/links")).get_json()
        assert links == {"user": "/users/7", "page": "/page/3", "first_page": "/page", "search": "/docs/intro?lang=en"}


class TestBlueprints:
    async def test_prefixes_and_nesting(self) -> None:
        app = guide("blueprints").app
        assert (await get(app, "/catalog/")).get_data(as_text=True) == "All products"
        product = await get(app, "/catalog/tea")
        assert product.get_data(as_text=True) == "Product tea (back to /catalog/)"
        sales = await get(app, "/admin/reports/sales", headers={"X-Token": "let-me-in"})
        assert sales.get_data(as_text=True) == "Sales report, served by reports.sales under /admin/reports"

    async def test_hooks_and_error_handlers_are_inherited(self) -> None:
        refused = await get(guide("blueprints").app, "/admin/reports/sales")
        assert (refused.status_code, refused.get_data(as_text=True)) == (403, "Administrators only.")

    async def test_host_matching(self) -> None:
        app = guide("blueprints").app
        on_api = await get(app, "/status", headers={"Host": "api.example.com"})
        assert on_api.get_data(as_text=True) == "The API host is up"
        assert (await get(app, "/status", headers={"Host": "www.example.com"})).status_code == 404
        assert (await get(app, "/catalog/", headers={"Host": "www.example.com"})).status_code == 200


class TestRouteGroups:
    async def test_counters(self) -> None:
        app = guide("routegroups").app
        group = guide("routegroups").counters
        before = group.requests
        missing = await get(app, "/counters/visits")
        assert (missing.status_code, missing.get_data(as_text=True)) == (404, "No such counter; POST to create it.")
        assert (await get(app, "/counters/visits", "POST")).get_data(as_text=True) == "11"
        assert (await get(app, "/counters/visits", "POST")).get_data(as_text=True) == "12"
        assert (await get(app, "/counters/visits")).get_data(as_text=True) == "12"
        assert group.requests == before + 4
        assert app.root.get_route("Counters.increment") is not None


class TestErrorsAndHooks:
    async def test_error_handlers(self) -> None:
        app = guide("errors_hooks").app
        missing = await get(app, "/teapots/7")
        assert missing.status_code == 404
        assert missing.get_data(as_text=True) == "<h1>Not here</h1><p>We only have three teapots, not 7.</p>"
        assert "<h1>Not here</h1>" in (await get(app, "/nowhere")).get_data(as_text=True)
        broken = await get(app, "/broken")
        assert broken.status_code == 500
        assert broken.get_data(as_text=True) == "Something broke on our side; it has been logged."

    async def test_hooks(self) -> None:
        app = guide("errors_hooks").app
        ok = await get(app, "/teapots/2")
        assert ok.get_data(as_text=True) == "Teapot 2"
        assert re.fullmatch(r"app;dur=\d+\.\d\d", ok.headers["Server-Timing"])
        # Error responses come from the error handlers, which run no hooks.
        assert "Server-Timing" not in (await get(app, "/teapots/9")).headers

    async def test_route_hook(self) -> None:
        app = guide("errors_hooks").app
        refused = await get(app, "/private")
        assert refused.status_code == 401
        challenge = WWWAuthenticate.from_header(refused.headers["WWW-Authenticate"])
        assert (challenge.type, challenge.parameters) == ("basic", {"realm": "private"})
        token = base64.b64encode(b"alice:wonderland").decode()
        welcome = await get(app, "/private", headers={"Authorization": f"Basic {token}"})
        assert welcome.get_data(as_text=True) == "Welcome, alice"


class TestRequestsAndResponses:
    async def test_query_and_headers(self) -> None:
        found = await get(
            guide("requests_responses").app, "/search?q=tea&page=2&tag=a&tag=b", headers={"User-Agent": "doc"}
        )
        assert found.get_json() == {"q": "tea", "page": 2, "tags": ["a", "b"], "agent": "doc"}

    async def test_form_and_cookies(self) -> None:
        app = guide("requests_responses").app
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        logged_in = await get(app, "/login", "POST", form, b"name=Ada")
        assert (logged_in.status_code, logged_in.headers["Location"]) == (303, "/whoami")
        cookie = logged_in.headers["Set-Cookie"]
        assert cookie.startswith("user=Ada;") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
        who = await get(app, "/whoami", headers={"Cookie": "user=Ada"})
        assert who.get_data(as_text=True) == "You are Ada."
        assert (await get(app, "/login", "POST", form, b"name=")).status_code == 400

    async def test_json(self) -> None:
        app = guide("requests_responses").app
        headers = {"Content-Type": "application/json"}
        total = await get(app, "/sum", "POST", headers, json.dumps({"numbers": [1, 2, 3.5]}).encode())
        assert total.get_json() == {"sum": 6.5}
        assert (await get(app, "/sum", "POST", headers, b"{nope")).status_code == 400
        assert (await get(app, "/sum", "POST", {}, b"[]")).status_code == 415

    async def test_files(self) -> None:
        body = (
            b"--XyZ\r\nContent-Disposition: form-data; name=avatar; filename=me.png\r\n"
            b"Content-Type: image/png\r\n\r\n" + b"\x89PNG" + b"0" * 96 + b"\r\n--XyZ--\r\n"
        )
        headers = {"Content-Type": "multipart/form-data; boundary=XyZ"}
        sent = await get(guide("requests_responses").app, "/avatar", "POST", headers, body)
        assert sent.get_json() == {"filename": "me.png", "type": "image/png", "size": 100}
        assert (
            await get(guide("requests_responses").app, "/avatar", "POST", headers, b"--XyZ--\r\n")
        ).status_code == 400


class TestStreaming:
    @pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
    def test_both_ways(self, http2: bool) -> None:
        content = bytes(range(256)) * 12_000  # 3 MB: more than the HTTP/2 windows and max_body_size

        def chunks_of(data: bytes):
            for start in range(0, len(data), 65_536):
                yield data[start : start + 65_536]

        with serve(guide("streaming").app, http2=True, max_body_size=1_000_000) as server:
            client = httpx.Client(http1=not http2, http2=http2, timeout=TIMEOUT, base_url=server.url(""))
            with client:
                checked = client.post("/checksum", content=chunks_of(content))
                assert checked.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
                assert checked.json() == {"size": len(content), "sha256": hashlib.sha256(content).hexdigest()}
                # read_async() gathers the rest in memory: max_body_size applies to it.
                split = client.post("/first-chunk", content=chunks_of(content[:500_000])).json()
                assert split["first"] > 0 and split["first"] + split["rest"] == 500_000
                if not http2:  # (httpx cannot take an early answer over HTTP/2)
                    assert client.post("/first-chunk", content=chunks_of(content)).status_code == 413
                numbers = client.get("/numbers?count=4")
                assert numbers.text == "1\n2\n3\n4\n"
                if not http2:
                    assert numbers.headers["transfer-encoding"] == "chunked"
                with client.stream("GET", "/countdown?from=2") as countdown:
                    parts = [part for part in countdown.iter_text() if part]
                assert "".join(parts) == "2...\n1...\nliftoff!\n"


class TestResourcesAndContext:
    def test_container_resources_and_signals(self) -> None:
        component = guide("resources").AppComponent({"web": {"port": 0, "http2": True}}, greeting="Welcome")
        server = RunningServer(component).start()
        try:
            port = component.child_components["web"].port
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT) as client:
                assert client.get("/greet/Ada").text == "Welcome, Ada!"
                assert client.get("/stats").json() == {"open": 1, "total": 1}
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT, http1=False, http2=True) as client:
                assert client.get("/stats").json()["total"] == 2
                info = client.get("/inspect/5").json()
        finally:
            server.stop()
        assert info == {
            "endpoint": "resources.inspect",
            "blueprint": "resources",
            "rule": "/inspect/<int:number>",
            "params": {"number": 5},
            "method": "GET",
            "protocol": "HTTP/2",
            "scheme": "http",
            "client": "127.0.0.1",
            "url": "/inspect/6",
        }

    def test_http2_only_component_from_code(self) -> None:
        component = guide("h2_only").AppComponent({"kyoukai": {"port": 0}})
        server = RunningServer(component).start()
        try:
            port = component.child_components["kyoukai"].port
            with httpx.Client(http1=False, http2=True, timeout=TIMEOUT) as client:
                response = client.get(f"http://127.0.0.1:{port}/")
            refused = httpx.get(f"http://127.0.0.1:{port}/", timeout=TIMEOUT)
        finally:
            server.stop()
        assert response.text == "Hello over HTTP/2\n"
        assert refused.status_code == 505


class TestGuideTests:
    def test_the_testing_page_samples_pass(self) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLES / "guide")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert re.search(r"\b6 passed\b", result.stdout), result.stdout


class TestReadme:
    README = ROOT / "README.rst"

    def test_parses_cleanly(self) -> None:
        docutils.core.publish_doctree(
            self.README.read_text(), settings_overrides={"report_level": 2, "halt_level": 2, "warning_stream": False}
        )

    def test_setup_commands_come_first(self) -> None:
        text = self.README.read_text()
        first = text.index("pip install -e '.[uvloop]' && cd examples/hello && asphalt run --loop uvloop config.yml")
        assert first < text.index("bash tests/run.sh") < text.index(".. code-block:: python")

    def test_example_is_the_hello_app(self) -> None:
        text = self.README.read_text()
        block = text.split(".. code-block:: python\n\n", 1)[1]
        lines = []
        for line in block.splitlines():
            if line and not line.startswith("    "):
                break
            lines.append(line[4:])
        app = (EXAMPLES / "hello" / "app.py").read_text()
        code = app.split('"""', 2)[2].strip()
        assert "\n".join(lines).strip() == code

    def test_links_and_benchmark_placeholder(self) -> None:
        text = self.README.read_text()
        assert (ROOT / "docs" / "index.rst").is_file() and "<docs/index.rst>`_" in text
        assert "Benchmarks\n----------" in text and "python bench/run.py" in text
