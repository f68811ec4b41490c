"""HTTP/2 flow control: large downloads and uploads with small and large windows, responses that
wait for WINDOW_UPDATE or SETTINGS, and request body credit returned only as the app reads."""

from __future__ import annotations

import hashlib

import pytest
from conftest import serve
from h2client import DEFAULT_WINDOW, Gate, H2Client, on_loop, only_connection, wait_on_loop
from hyperframe.frame import DataFrame, SettingsFrame, WindowUpdateFrame
from werkzeug.wrappers import Response

from kyoukai import Kyoukai
from kyoukai.backends.http2 import H2KyoukaiComponent

pytestmark = pytest.mark.timeout(60)

MiB = 1 << 20
BIG = 100 * MiB
SILENCE = 0.3


def chunk(i: int) -> bytes:
    """The ``i``-th MiB of a download: distinct per position, so lost or reordered data shows."""
    return i.to_bytes(4, "big") * (MiB // 4)


def expected_digest(size_mib: int) -> str:
    digest = hashlib.sha256()
    for i in range(size_mib):
        digest.update(chunk(i))
    return digest.hexdigest()


def make_app(gate: Gate | None = None) -> Kyoukai:
    app = Kyoukai("h2flow")

    @app.route("/stream/<int:mib>")
    async def stream(ctx, mib: int):
        async def body():
            for i in range(mib):
                yield chunk(i)

        return Response(body())

    @app.route("/whole/<int:mib>")
    async def whole(ctx, mib: int):
        return b"".join(chunk(i) for i in range(mib))

    @app.route("/bytes/<int:size>")
    async def sized(ctx, size: int):
        return b"a" * size

    @app.route("/upload-stream", methods=["POST"], stream_body=True)
    async def upload_stream(ctx):
        if gate is not None:
            await gate.wait()
        digest = hashlib.sha256()
        size = 0
        async for data in ctx.request.stream:
            size += len(data)
            digest.update(data)
        return f"{size} {digest.hexdigest()}"

    @app.route("/ignore-body", methods=["POST"], stream_body=True)
    async def ignore_body(ctx):
        await gate.wait()
        return "not read"

    @app.route("/upload-whole", methods=["POST"])
    async def upload_whole(ctx):
        data = ctx.request.get_data()
        return f"{len(data)} {hashlib.sha256(data).hexdigest()}"

    return app


def upload_payload() -> bytes:
    return b"".join(chunk(i) for i in range(BIG // MiB))


class TestDownload:
    @pytest.mark.parametrize(
        ("path", "settings", "connection_window"),
        [
            ("/stream/100", {}, DEFAULT_WINDOW),
            (
                "/whole/100",
                {SettingsFrame.INITIAL_WINDOW_SIZE: 16 * MiB, SettingsFrame.MAX_FRAME_SIZE: MiB},
                64 * MiB,
            ),
        ],
        ids=["default-window-streamed", "large-window-whole-body"],
    )
    def test_100_mib(self, path: str, settings: dict[int, int], connection_window: int) -> None:
        with serve(make_app(), H2KyoukaiComponent) as server:
            with H2Client(server.port, settings=settings, connection_window=connection_window, timeout=30) as client:
                sid = client.request(path, keep_data=False)
                stream = client.response(sid, timeout=30)
        assert stream.status == 200
        assert stream.received == BIG
        assert stream.digest.hexdigest() == expected_digest(BIG // MiB)
        # The client checked every DATA frame against its windows and MAX_FRAME_SIZE; the server
        # also used the whole frame size it was allowed.
        assert stream.largest_frame == client.max_frame_size


class TestUpload:
    @pytest.mark.parametrize(
        ("path", "cfg"),
        [
            ("/upload-stream", {"stream_window_size": DEFAULT_WINDOW, "connection_window_size": DEFAULT_WINDOW}),
            (
                "/upload-whole",
                {"stream_window_size": 16 * MiB, "connection_window_size": 64 * MiB, "max_body_size": 101 * MiB},
            ),
        ],
        ids=["default-window-streamed", "large-window-buffered"],
    )
    def test_100_mib(self, path: str, cfg: dict[str, int]) -> None:
        payload = upload_payload()
        with serve(make_app(), H2KyoukaiComponent, **cfg) as server:
            with H2Client(server.port, timeout=30) as client:
                client.wait_ready()
                assert client.remote_settings[SettingsFrame.INITIAL_WINDOW_SIZE] == cfg["stream_window_size"]
                sid = client.request(path, "POST", [("content-length", str(len(payload)))], end_stream=False)
                client.send_body(sid, payload)
                stream = client.response(sid, timeout=30)
        assert stream.status == 200
        assert bytes(stream.data).decode() == f"{BIG} {hashlib.sha256(payload).hexdigest()}"


class TestBlockedResponses:
    def test_zero_window_resumes_on_stream_and_connection_updates_and_settings(self) -> None:
        size = 200_000
        with serve(make_app(), H2KyoukaiComponent) as server:
            client = H2Client(server.port, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0}, auto_ack=False)
            with client:
                sid = client.request(f"/bytes/{size}")
                stream = client.streams[sid]
                client.read_until(lambda: stream.status is not None)
                assert stream.status == 200
                assert not any(isinstance(f, DataFrame) for f in client.frames_within(SILENCE))
                assert stream.received == 0

                # Stream credit beyond the connection window: only the connection's 65,535 go.
                client.window_update(sid, 100_000)
                client.read_until(lambda: stream.received == DEFAULT_WINDOW)
                assert not any(isinstance(f, DataFrame) for f in client.frames_within(SILENCE))
                assert stream.received == DEFAULT_WINDOW

                # Connection credit: the stream's remaining 34,465 bytes go, then it waits again.
                client.window_update(0, 200_000)
                client.read_until(lambda: stream.received == 100_000)
                assert not any(isinstance(f, DataFrame) for f in client.frames_within(SILENCE))
                assert stream.received == 100_000 and not stream.ended

                # A larger SETTINGS_INITIAL_WINDOW_SIZE opens every stream's window.
                client.update_settings(INITIAL_WINDOW_SIZE=MiB)
                stream = client.response(sid)
        assert stream.ended
        assert bytes(stream.data) == b"a" * size
        assert client.settings_acks >= 2

    def test_connection_update_wakes_every_blocked_stream(self) -> None:
        with serve(make_app(), H2KyoukaiComponent) as server:
            with H2Client(server.port, auto_ack=False) as client:
                # The first response takes the whole connection window; the others wait on it.
                first = client.request(f"/bytes/{DEFAULT_WINDOW}")
                client.response(first)
                others = [client.request("/bytes/1000") for _ in range(3)]
                client.read_until(lambda: all(client.streams[s].status for s in others))
                assert not any(isinstance(f, DataFrame) for f in client.frames_within(SILENCE))
                client.window_update(0, 3000)
                client.read_until(lambda: all(client.streams[s].ended for s in others))
        assert all(bytes(client.streams[s].data) == b"a" * 1000 for s in others)


class TestFairness:
    @pytest.mark.parametrize(
        ("settings", "connection_window"),
        [({}, DEFAULT_WINDOW), ({SettingsFrame.INITIAL_WINDOW_SIZE: MiB}, MiB)],
        ids=["default-windows", "large-windows"],
    )
    def test_concurrent_downloads_share_the_connection(self, settings: dict[int, int], connection_window: int) -> None:
        size_mib = 4
        with serve(make_app(), H2KyoukaiComponent) as server:
            with H2Client(server.port, settings=settings, connection_window=connection_window) as client:
                ids = [client.request(f"/stream/{size_mib}", keep_data=False) for _ in range(3)]
                streams = [client.streams[sid] for sid in ids]
                client.read_until(lambda: any(s.ended for s in streams), timeout=30)
                progress = [s.received for s in streams]
                client.read_until(lambda: all(s.ended for s in streams), timeout=30)
        # When the first response is complete, the others are well on their way.
        assert min(progress) >= size_mib * MiB // 2, progress
        assert all(s.digest.hexdigest() == expected_digest(size_mib) for s in streams)


class TestRequestBodyCredit:
    def test_credit_returns_only_as_the_app_reads(self) -> None:
        window = 128 * 1024
        total = 1 * MiB
        payload = bytes(range(256)) * (total // 256)
        gate = Gate()
        with serve(make_app(gate), H2KyoukaiComponent, stream_window_size=window) as server:
            gate.server = server
            with H2Client(server.port) as client:
                client.wait_ready()
                assert client.remote_settings[SettingsFrame.INITIAL_WINDOW_SIZE] == window
                sid = client.request("/upload-stream", "POST", end_stream=False)
                assert gate.reached.wait(10)
                # The handler does not read: the client may send one window, then must wait.
                assert client.send_available(sid, payload) == window
                quiet = client.frames_within(SILENCE)
                assert not [f for f in quiet if isinstance(f, WindowUpdateFrame) and f.stream_id == sid]
                assert client.streams[sid].send_window == 0
                protocol = only_connection(server)
                buffered = on_loop(server, lambda: protocol.streams[sid].buffered)
                assert buffered == window <= protocol.settings.stream_window_size

                gate.open()
                client.send_body(client.streams[sid].stream_id, payload[window:])
                stream = client.response(sid)
        assert stream.status == 200
        assert bytes(stream.data).decode() == f"{total} {hashlib.sha256(payload).hexdigest()}"
        updates = [f for f in client.frames if isinstance(f, WindowUpdateFrame) and f.stream_id == sid]
        assert sum(f.window_increment for f in updates) >= total - window

    def test_buffered_path_returns_credit_and_frees_the_stream(self) -> None:
        payload = b"x" * (3 * MiB)
        with serve(make_app(), H2KyoukaiComponent, stream_window_size=DEFAULT_WINDOW) as server:
            with H2Client(server.port) as client:
                client.wait_ready()
                sid = client.request("/upload-whole", "POST", end_stream=False)
                client.send_body(sid, payload)
                stream = client.response(sid)
                protocol = only_connection(server)
                wait_on_loop(server, lambda: not protocol.streams)
        assert bytes(stream.data).decode() == f"{len(payload)} {hashlib.sha256(payload).hexdigest()}"

    def test_unread_body_credit_goes_back_to_the_connection(self) -> None:
        """A handler that answers without reading the body: the connection window the unread
        body used is returned, so other streams can still upload, and the stream is not reset
        at once (the rest of its body would be read and thrown away)."""
        gate = Gate()
        cfg = {"stream_window_size": DEFAULT_WINDOW, "connection_window_size": DEFAULT_WINDOW}
        with serve(make_app(gate), H2KyoukaiComponent, **cfg) as server:
            gate.server = server
            with H2Client(server.port) as client:
                client.wait_ready()
                ignored = client.request("/ignore-body", "POST", end_stream=False)
                assert gate.reached.wait(10)
                assert client.send_available(ignored, b"x" * 100_000) == DEFAULT_WINDOW
                assert client.conn_send_window == 0
                protocol = only_connection(server)
                wait_on_loop(server, lambda: protocol.streams[ignored].buffered == DEFAULT_WINDOW)
                gate.open()
                first = client.response(ignored)
                payload = b"y" * 300_000
                second = client.response(client.request("/upload-whole", "POST", body=payload))
        assert first.status == 200 and bytes(first.data) == b"not read"
        assert first.reset_code is None
        assert bytes(second.data).decode() == f"{len(payload)} {hashlib.sha256(payload).hexdigest()}"
