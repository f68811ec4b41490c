"""
Static files (``add_static`` and ``kyoukai.static``): types and lengths, conditional and range
requests, HEAD, the path rules (traversal, symbolic links, hidden files, directories), bodies
streamed from disk on HTTP/1.1 and HTTP/2, and the file closed when the client goes away.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from conftest import serve
from h2client import H2Client
from http11_client import RawClient, request
from werkzeug.http import http_date

from kyoukai import Kyoukai
from kyoukai.static import DEFAULT_CHUNK_SIZE, FileChunks, StaticFiles, file_response
from kyoukai.testing import TestKyoukai

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 20.0
SECRET = "TOP-SECRET-CONTENT-OUTSIDE-THE-FOLDER"
CSS = "body { color: red }\n"
DATA = bytes(range(256)) * 4  # 1024 bytes
BIG_SIZE = 20 * 1024 * 1024


@pytest.fixture(scope="module")
def public(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder to serve, next to a secret file that must never be served."""
    base = tmp_path_factory.mktemp("static")
    (base / "secret.txt").write_text(SECRET)
    public = base / "public"
    (public / "css").mkdir(parents=True)
    (public / "css" / "a.css").write_text(CSS)
    (public / "docs").mkdir()
    (public / "docs" / "index.html").write_text("<h1>Docs</h1>\n")
    (public / "empty").mkdir()
    (public / "data.bin").write_bytes(DATA)
    (public / "empty.txt").write_bytes(b"")
    (public / "notes.txt").write_text("héllo\n")
    (public / "backup.tar.gz").write_bytes(b"\x1f\x8b not really")
    (public / "big.bin").write_bytes(os.urandom(BIG_SIZE))
    (public / ".env").write_text(SECRET)
    (public / ".well-known").mkdir()
    (public / ".well-known" / "security.txt").write_text("Contact: x\n")
    (public / "back\\slash.txt").write_text(SECRET)
    (public / "outside.txt").symlink_to(base / "secret.txt")
    (public / "outside_dir").symlink_to(base)
    (public / "inside.css").symlink_to(public / "css" / "a.css")
    (public / "docs" / "escape").mkdir()
    (public / "docs" / "escape" / "index.html").symlink_to(base / "secret.txt")
    os.mkfifo(public / "pipe")
    return public


def make_app(public: Path) -> Kyoukai:
    app = Kyoukai("statics")
    app.add_static("/static", public)
    app.add_static("/site", public, endpoint="site", index="index.html", cache_control="public, max-age=60")
    app.add_static("/dotted", public, endpoint="dotted", allow_hidden=True)
    return app


@pytest.fixture(scope="module")
def app(public: Path) -> TestKyoukai:
    return TestKyoukai.wrap_existing_app(make_app(public))


async def get(app: TestKyoukai, url: str, method: str = "GET", **headers: str):
    return await app.inject_request({k.replace("_", "-"): v for k, v in headers.items()}, url, method)


async def body_of(response) -> bytes:
    """The body of a response, streamed or not."""
    if isinstance(response.response, FileChunks):
        return b"".join([chunk async for chunk in response.response])
    return response.get_data()


class TestServing:
    async def test_a_file_with_its_type_and_length(self, app: TestKyoukai) -> None:
        response = await get(app, "/static/css/a.css")
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "text/css; charset=utf-8"
        assert response.headers["Content-Length"] == str(len(CSS))
        assert response.headers["Accept-Ranges"] == "bytes"
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert await body_of(response) == CSS.encode()

    async def test_validators(self, app: TestKyoukai, public: Path) -> None:
        response = await get(app, "/static/data.bin")
        st = (public / "data.bin").stat()
        etag = response.headers["ETag"]
        assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")
        assert response.headers["Last-Modified"] == http_date(int(st.st_mtime))
        assert response.headers["Content-Type"] == "application/octet-stream"
        assert await body_of(response) == DATA
        # Same file, same validator; another file, another.
        assert (await get(app, "/static/data.bin")).headers["ETag"] == etag
        assert (await get(app, "/static/css/a.css")).headers["ETag"] != etag

    async def test_types(self, app: TestKyoukai) -> None:
        notes = await get(app, "/static/notes.txt")
        assert notes.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert (await body_of(notes)).decode() == "héllo\n"
        # A compressed file is sent as it is, not with a Content-Encoding the client would undo.
        archive = await get(app, "/static/backup.tar.gz")
        assert archive.headers["Content-Type"] == "application/gzip"
        assert "Content-Encoding" not in archive.headers
        # A link inside the folder is followed; the type comes from the name asked for.
        linked = await get(app, "/static/inside.css")
        assert (linked.status_code, await body_of(linked)) == (200, CSS.encode())

    async def test_empty_file(self, app: TestKyoukai) -> None:
        response = await get(app, "/static/empty.txt", Range="bytes=-10")
        assert (response.status_code, response.headers["Content-Length"]) == (200, "0")
        assert await body_of(response) == b""

    async def test_head(self, app: TestKyoukai) -> None:
        response = await get(app, "/static/big.bin", "HEAD")
        assert response.status_code == 200
        assert response.headers["Content-Length"] == str(BIG_SIZE)
        assert "ETag" in response.headers
        assert response.response == []

    async def test_the_body_is_streamed_in_chunks(self, app: TestKyoukai, public: Path) -> None:
        response = await get(app, "/static/big.bin")
        body = response.response
        # Not bytes and not a list: an async iterator that reads the file as it is sent.
        assert isinstance(body, FileChunks) and hasattr(body, "__anext__")
        assert not body.closed
        sizes, digest = [], hashlib.sha256()
        async for chunk in body:
            sizes.append(len(chunk))
            digest.update(chunk)
        assert max(sizes) == DEFAULT_CHUNK_SIZE and len(sizes) == BIG_SIZE // DEFAULT_CHUNK_SIZE
        assert digest.hexdigest() == hashlib.sha256((public / "big.bin").read_bytes()).hexdigest()
        assert body.closed

    async def test_an_unsent_body_is_closed_by_the_response(self, app: TestKyoukai) -> None:
        response = await get(app, "/static/big.bin")
        body = response.response
        response.close()
        assert body.closed

    async def test_missing_file_and_directories(self, app: TestKyoukai) -> None:
        assert (await get(app, "/static/nope.css")).status_code == 404
        assert (await get(app, "/static/css")).status_code == 404
        assert (await get(app, "/static/css/")).status_code == 404
        assert (await get(app, "/static/")).status_code == 404
        assert (await get(app, "/static/css/a.css/")).status_code == 404
        # A FIFO is not a regular file (and opening it must not block the server).
        assert (await get(app, "/static/pipe")).status_code == 404

    async def test_index(self, app: TestKyoukai) -> None:
        page = await get(app, "/site/docs/")
        assert (page.status_code, await body_of(page)) == (200, b"<h1>Docs</h1>\n")
        assert page.headers["Content-Type"] == "text/html; charset=utf-8"
        assert page.headers["Cache-Control"] == "public, max-age=60"
        redirect = await get(app, "/site/docs?x=1")
        assert (redirect.status_code, redirect.headers["Location"]) == (308, "/site/docs/?x=1")
        # A folder without an index, and an index that links outside the folder.
        assert (await get(app, "/site/empty/")).status_code == 404
        assert (await get(app, "/site/escape/")).status_code == 404
        assert (await get(app, "/site/css/a.css")).status_code == 200

    async def test_hidden_files(self, app: TestKyoukai) -> None:
        assert (await get(app, "/static/.env")).status_code == 404
        assert (await get(app, "/static/.well-known/security.txt")).status_code == 404
        allowed = await get(app, "/dotted/.well-known/security.txt")
        assert (allowed.status_code, await body_of(allowed)) == (200, b"Contact: x\n")

    async def test_url_for_and_the_forwarded_method(self, public: Path) -> None:
        app = TestKyoukai("urls")
        route = app.add_static("/assets/", public)
        assert route.get_endpoint_name() == "urls.static"
        app.finalize()
        environ = {"SERVER_NAME": "localhost", "SERVER_PORT": "80", "wsgi.url_scheme": "http", "REQUEST_METHOD": "GET"}
        assert app.url_for(environ, "urls.static", filename="css/a.css") == "/assets/css/a.css"
        assert (await get(app, "/assets/css/a.css")).status_code == 200

    def test_registration_errors(self, public: Path, tmp_path: Path) -> None:
        app = Kyoukai("errors")
        with pytest.raises(ValueError, match="must start with '/'"):
            app.add_static("static", public)
        with pytest.raises(ValueError, match="is not a directory"):
            app.add_static("/static", tmp_path / "missing")
        with pytest.raises(ValueError, match="index must be a file name"):
            app.add_static("/static", public, index="../index.html")
        with pytest.raises(ValueError, match="chunk_size"):
            StaticFiles(public, chunk_size=0)
        app.add_static("/static", public)
        with pytest.raises(ValueError, match="already registered"):
            app.add_static("/other", public)

    async def test_file_response_in_a_handler(self, public: Path) -> None:
        app = TestKyoukai("handler")

        @app.route("/report")
        async def report(ctx):
            return file_response(ctx.request, public / "data.bin", content_type="application/x-report")

        @app.route("/gone")
        async def gone(ctx):
            return file_response(ctx.request, public / "nope.bin")

        response = await get(app, "/report", Range="bytes=0-3")
        assert (response.status_code, response.headers["Content-Type"]) == (206, "application/x-report")
        assert await body_of(response) == DATA[:4]
        assert (await get(app, "/gone")).status_code == 404


class TestConditional:
    async def etag_and_date(self, app: TestKyoukai) -> tuple[str, str]:
        response = await get(app, "/static/data.bin")
        response.close()
        return response.headers["ETag"], response.headers["Last-Modified"]

    async def test_if_none_match(self, app: TestKyoukai) -> None:
        etag, _ = await self.etag_and_date(app)
        for value in (etag, f'"other", {etag}', f"W/{etag}", "*"):
            response = await get(app, "/static/data.bin", If_None_Match=value)
            assert response.status_code == 304, value
            assert response.headers["ETag"] == etag
            assert "Content-Type" not in response.headers and response.get_data() == b""
        assert (await get(app, "/static/data.bin", If_None_Match='"other"')).status_code == 200
        assert (await get(app, "/static/data.bin", "HEAD", If_None_Match=etag)).status_code == 304

    async def test_if_modified_since(self, app: TestKyoukai) -> None:
        _, last_modified = await self.etag_and_date(app)
        assert (await get(app, "/static/data.bin", If_Modified_Since=last_modified)).status_code == 304
        assert (await get(app, "/static/data.bin", If_Modified_Since=http_date(0))).status_code == 200
        # If-None-Match wins over If-Modified-Since.
        both = await get(app, "/static/data.bin", If_None_Match='"other"', If_Modified_Since=last_modified)
        assert both.status_code == 200

    async def test_if_match_and_if_unmodified_since(self, app: TestKyoukai) -> None:
        etag, last_modified = await self.etag_and_date(app)
        assert (await get(app, "/static/data.bin", If_Match='"other"')).status_code == 412
        # If-Match compares strongly: a weak tag never matches.
        assert (await get(app, "/static/data.bin", If_Match=f"W/{etag}")).status_code == 412
        assert (await get(app, "/static/data.bin", If_Match=etag)).status_code == 200
        assert (await get(app, "/static/data.bin", If_Match="*")).status_code == 200
        assert (await get(app, "/static/data.bin", If_Unmodified_Since=http_date(0))).status_code == 412
        assert (await get(app, "/static/data.bin", If_Unmodified_Since=last_modified)).status_code == 200


class TestRanges:
    async def test_a_range(self, app: TestKyoukai) -> None:
        response = await get(app, "/static/data.bin", Range="bytes=10-19")
        assert response.status_code == 206
        assert response.headers["Content-Range"] == "bytes 10-19/1024"
        assert response.headers["Content-Length"] == "10"
        assert await body_of(response) == DATA[10:20]

    async def test_open_and_suffix_ranges(self, app: TestKyoukai) -> None:
        tail = await get(app, "/static/data.bin", Range="bytes=1000-")
        assert (tail.headers["Content-Range"], await body_of(tail)) == ("bytes 1000-1023/1024", DATA[1000:])
        suffix = await get(app, "/static/data.bin", Range="bytes=-10")
        assert suffix.status_code == 206
        assert (suffix.headers["Content-Range"], await body_of(suffix)) == ("bytes 1014-1023/1024", DATA[-10:])
        # A suffix longer than the file, or an end past it, is cut to the file.
        longer = await get(app, "/static/data.bin", Range="bytes=-5000")
        assert (longer.headers["Content-Range"], await body_of(longer)) == ("bytes 0-1023/1024", DATA)
        past = await get(app, "/static/data.bin", Range="bytes=1020-5000")
        assert (past.headers["Content-Range"], await body_of(past)) == ("bytes 1020-1023/1024", DATA[1020:])

    async def test_unsatisfiable(self, app: TestKyoukai) -> None:
        response = await get(app, "/static/data.bin", Range="bytes=1024-")
        assert response.status_code == 416
        assert response.headers["Content-Range"] == "bytes */1024"

    async def test_ranges_not_served_as_ranges(self, app: TestKyoukai) -> None:
        for value in ("bytes=0-1,5-6", "items=0-1", "bytes=9-2", "nonsense"):
            response = await get(app, "/static/data.bin", Range=value)
            assert (response.status_code, await body_of(response)) == (200, DATA), value
        # Range is defined for GET only.
        head = await get(app, "/static/data.bin", "HEAD", Range="bytes=0-9")
        assert (head.status_code, head.headers["Content-Length"]) == (200, "1024")

    async def test_if_range(self, app: TestKyoukai) -> None:
        etag = (await get(app, "/static/data.bin", "HEAD")).headers["ETag"]
        last_modified = (await get(app, "/static/data.bin", "HEAD")).headers["Last-Modified"]
        current = await get(app, "/static/data.bin", Range="bytes=0-9", If_Range=etag)
        assert (current.status_code, await body_of(current)) == (206, DATA[:10])
        by_date = await get(app, "/static/data.bin", Range="bytes=0-9", If_Range=last_modified)
        assert by_date.status_code == 206
        await body_of(by_date)
        for stale in ('"old"', f"W/{etag}", http_date(0)):
            response = await get(app, "/static/data.bin", Range="bytes=0-9", If_Range=stale)
            assert (response.status_code, await body_of(response)) == (200, DATA), stale


TRAVERSALS = [
    "/static/../secret.txt",
    "/static/css/../../secret.txt",
    "/static/%2e%2e/secret.txt",
    "/static/%2E%2E/secret.txt",
    "/static/.%2e/secret.txt",
    "/static/%2e%2e%2fsecret.txt",
    "/static/css/..%2f..%2fsecret.txt",
    "/static/..%5csecret.txt",
    "/static/css%5c..%5c..%5csecret.txt",
    "/static/back%5cslash.txt",
    "/static/secret.txt%00.css",
    "/static/%00/../secret.txt",
    "/static/outside.txt",
    "/static/outside_dir/secret.txt",
    "/static/./css/a.css",
    "/static/css/./a.css",
    "/static/.env",
]


class TestTraversal:
    @pytest.mark.parametrize("target", TRAVERSALS)
    async def test_never_outside_the_folder(self, app: TestKyoukai, target: str) -> None:
        response = await get(app, target)
        assert response.status_code == 404
        assert SECRET not in response.get_data(as_text=True)

    async def test_absolute_paths(self, app: TestKyoukai, public: Path) -> None:
        secret = public.parent / "secret.txt"
        for target in (f"/static/{secret}", "/static//etc/passwd", "/static/%2fetc%2fpasswd"):
            response = await get(app, target)
            # The doubled slash is merged by the router's redirect, to a path inside the folder.
            assert response.status_code in (308, 404), target
            if response.status_code == 308:
                assert response.headers["Location"].startswith("http://localhost/static/")
                followed = await get(app, response.headers["Location"].removeprefix("http://localhost"))
                assert followed.status_code == 404
            assert SECRET not in response.get_data(as_text=True)

    def test_over_the_wire(self, public: Path) -> None:
        with serve(make_app(public)) as server, RawClient(server.port) as client:
            for target in TRAVERSALS:
                client.send(request("GET", target))
                response = client.read_response()
                assert response.status == 404, target
                assert SECRET.encode() not in response.body
            client.send(request("GET", "/static/../../../../../../etc/passwd"))
            response = client.read_response()
            assert response.status == 404 and b"root:" not in response.body

    def test_curl_path_as_is(self, public: Path) -> None:
        curl = shutil.which("curl")
        if curl is None:
            pytest.skip("curl is not installed")
        with serve(make_app(public)) as server:
            for target in ("/static/../secret.txt", "/static/css/../../secret.txt", "/static/%2e%2e/secret.txt"):
                result = subprocess.run(
                    [curl, "-s", "--path-as-is", "-w", "\n%{http_code}", server.url(target)],
                    capture_output=True,
                    text=True,
                    timeout=TIMEOUT,
                    check=True,
                )
                assert result.stdout.endswith("\n404"), (target, result.stdout)
                assert SECRET not in result.stdout


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def server(public: Path):
    with serve(make_app(public), http2=True) as running:
        yield running


class TestOverHTTP1AndHTTP2:
    @pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
    def test_a_large_file_intact(self, server, public: Path, http2: bool) -> None:
        expected = sha256((public / "big.bin").read_bytes())
        with httpx.Client(http1=not http2, http2=http2, timeout=TIMEOUT) as client:
            digest, size = hashlib.sha256(), 0
            with client.stream("GET", server.url("/static/big.bin")) as response:
                assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
                assert response.status_code == 200
                assert response.headers["content-length"] == str(BIG_SIZE)
                # A known length: no chunked coding on HTTP/1.1.
                assert "transfer-encoding" not in response.headers
                for chunk in response.iter_raw():
                    digest.update(chunk)
                    size += len(chunk)
        assert (size, digest.hexdigest()) == (BIG_SIZE, expected)

    @pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
    def test_conditional_range_and_head(self, server, http2: bool) -> None:
        with httpx.Client(http1=not http2, http2=http2, timeout=TIMEOUT) as client:
            first = client.get(server.url("/static/css/a.css"))
            assert (first.status_code, first.text) == (200, CSS)
            assert first.headers["content-type"] == "text/css; charset=utf-8"
            etag = first.headers["etag"]
            cached = client.get(server.url("/static/css/a.css"), headers={"If-None-Match": etag})
            assert (cached.status_code, cached.content) == (304, b"")
            since = client.get(
                server.url("/static/css/a.css"), headers={"If-Modified-Since": first.headers["last-modified"]}
            )
            assert since.status_code == 304
            part = client.get(server.url("/static/data.bin"), headers={"Range": "bytes=-10"})
            assert (part.status_code, part.content) == (206, DATA[-10:])
            assert part.headers["content-range"] == "bytes 1014-1023/1024"
            assert client.get(server.url("/static/data.bin"), headers={"Range": "bytes=2000-"}).status_code == 416
            head = client.head(server.url("/static/big.bin"))
            assert (head.status_code, head.headers["content-length"], head.content) == (200, str(BIG_SIZE), b"")
            assert client.get(server.url("/static/nope")).status_code == 404
            # The connection is still good after all of that.
            assert client.get(server.url("/static/css/a.css")).text == CSS

    @pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
    def test_curl_ranges(self, server, public: Path, http2: bool) -> None:
        curl = shutil.which("curl")
        if curl is None:
            pytest.skip("curl is not installed")
        flag = "--http2-prior-knowledge" if http2 else "--http1.1"
        big = (public / "big.bin").read_bytes()
        start = 5 * 1024 * 1024 + 7
        result = subprocess.run(
            [curl, "-s", flag, "-r", f"{start}-{start + 999_999}", server.url("/static/big.bin")],
            capture_output=True,
            timeout=TIMEOUT,
            check=True,
        )
        assert result.stdout == big[start : start + 1_000_000]


class TestClientGoesAway:
    """The file is closed when the client disconnects or resets the stream mid-download."""

    @pytest.fixture
    def tracked(self, public: Path):
        """A server whose /tracked route reports (through an event) when its file body is closed."""
        bodies: list[FileChunks] = []
        closed = threading.Event()

        class Tracked:
            def __init__(self, inner: FileChunks) -> None:
                self.inner = inner

            def __aiter__(self):
                return self

            async def __anext__(self) -> bytes:
                return await self.inner.__anext__()

            async def aclose(self) -> None:
                await self.inner.aclose()
                closed.set()

        app = Kyoukai("tracked")

        @app.route("/tracked")
        async def tracked_file(ctx):
            response = file_response(ctx.request, public / "big.bin")
            bodies.append(response.response)
            response.response = Tracked(response.response)
            return response

        with serve(app, http2=True) as running:
            yield running, bodies, closed

    @staticmethod
    def open_descriptors_of(path: Path) -> list[str]:
        fd_dir = Path("/proc/self/fd")
        if not fd_dir.is_dir():
            pytest.skip("no /proc/self/fd to look at")
        found = []
        for entry in fd_dir.iterdir():
            try:
                if os.readlink(entry) == str(path):
                    found.append(entry.name)
            except OSError:
                continue
        return found

    def test_http1_disconnect(self, tracked, public: Path) -> None:
        server, bodies, closed = tracked
        with RawClient(server.port) as client:
            client.send(request("GET", "/tracked"))
            head = client.read_head()
            assert head.status == 200
            client.read_exactly(DEFAULT_CHUNK_SIZE)
            assert self.open_descriptors_of(public / "big.bin")
        assert closed.wait(TIMEOUT), "the body was not closed after the client went away"
        assert bodies[0].closed
        assert self.open_descriptors_of(public / "big.bin") == []

    def test_http2_reset(self, tracked, public: Path) -> None:
        server, bodies, closed = tracked
        # With no credit given back, the server is stuck after the first window of the body.
        client = H2Client(server.port, auto_ack=False)
        try:
            client.wait_ready()
            stream_id = client.request("/tracked")
            stream = client.streams[stream_id]
            client.read_until(lambda: stream.received > 0)
            assert stream.status == 200 and not stream.done
            client.reset(stream_id)
            assert closed.wait(TIMEOUT), "the body was not closed after the stream was reset"
            assert bodies[0].closed
            assert self.open_descriptors_of(public / "big.bin") == []
            # The connection serves on.
            other = client.request("/tracked", "HEAD")
            assert client.response(other).status == 200
        finally:
            client.sock.close()


def example_site() -> TestKyoukai:
    """The app of examples/static (the repository root is put on the import path if needed)."""
    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    return TestKyoukai.wrap_existing_app(importlib.import_module("examples.static.app").app)


class TestExample:
    """examples/static, the sample of docs/static.rst."""

    async def test_pages(self) -> None:
        site = example_site()
        index = await get(site, "/")
        assert '<link rel="stylesheet" href="/static/css/site.css">' in index.get_data(as_text=True)
        css = await get(site, "/static/css/site.css")
        assert (css.status_code, css.headers["Content-Type"]) == (200, "text/css; charset=utf-8")
        assert (await body_of(css)).startswith(b"body {")
        docs = await get(site, "/docs/")
        assert b"<h1>Documentation</h1>" in await body_of(docs)
        guide = await get(site, "/docs/guide")
        assert (guide.status_code, guide.headers["Location"]) == (308, "/docs/guide/")
        assert b"<h1>Guide</h1>" in await body_of(await get(site, "/docs/guide/"))
        script = await get(site, "/assets/app.3f9a2c.js")
        assert script.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        await body_of(script)

    async def test_report(self) -> None:
        site = example_site()
        report = await get(site, "/report", Range="bytes=0-13")
        assert report.status_code == 206
        assert report.headers["Content-Type"] == "text/csv; charset=utf-8"
        assert report.headers["Content-Disposition"] == 'attachment; filename="report.csv"'
        assert await body_of(report) == b"month,visitors"
