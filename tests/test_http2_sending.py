"""
HTTP/2 sending hygiene: a window opened while a sender is about to wait is never lost, and a
response that ends before its request lets the client finish the upload before the stream is
reset. (Resets h2 makes on its own spending the reset budget: test_attacks.py.)
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
from typing import Any

import httpx
import pytest
from conftest import serve
from h2.errors import ErrorCodes
from h2client import TIMEOUT, Gate, H2Client, on_loop, only_connection, wait_on_loop
from hyperframe.frame import SettingsFrame, WindowUpdateFrame
from werkzeug.wrappers import Response

from kyoukai import Kyoukai
from kyoukai.backends.http2 import H2KyoukaiComponent, H2KyoukaiProtocol

MiB = 1024 * 1024
BODY = b"late window " * 1000


def make_app(gate: Gate | None = None) -> Kyoukai:
    app = Kyoukai("h2sending")

    @app.route("/body")
    async def body(ctx):
        return BODY

    @app.route("/wait", methods=["GET", "POST"])
    async def wait(ctx):
        await gate.wait()
        return "waited\n"

    @app.route("/upload", methods=["POST"])
    async def upload(ctx):
        data = ctx.request.get_data()
        return f"{len(data)} {hashlib.sha256(data).hexdigest()}"

    @app.route("/ignore", methods=["POST"], stream_body=True)
    async def ignore(ctx):
        return "ignored\n"

    return app


class LateUpdateProtocol(H2KyoukaiProtocol):
    """
    Delivers ``late_frame`` (bytes the client is taken to have sent) at the worst moment: after
    the sender handed its bytes over and the window was closed, before it starts waiting for
    them to go out.
    """

    late_frame: bytes = b""

    async def _drained(self, state: Any) -> None:
        late, type(self).late_frame = type(self).late_frame, b""
        if late:
            assert self.core.pending(state.stream_id), "the window was open: nothing to wait for"
            self.data_received(late)
        await super()._drained(state)


def discarding(protocol: H2KyoukaiProtocol) -> list[int]:
    """The streams whose request body the server is throwing away."""
    return [stream.stream_id for stream in protocol.core.streams.values() if stream.discarding]


class LateUpdateComponent(H2KyoukaiComponent):
    def get_protocol(self, ctx: Any) -> H2KyoukaiProtocol:
        return LateUpdateProtocol(self, ctx)


class TestNoLostWakeUp:
    """Item: the window opens between the sender's check and its wait."""

    @pytest.mark.parametrize("opener", ["window_update", "settings"])
    def test_response_goes_out_when_the_window_opens_before_the_wait(self, opener: str) -> None:
        # send_timeout only matters when the wake-up is lost: the stream would be reset then.
        with serve(make_app(), LateUpdateComponent, send_timeout=5) as server:
            with H2Client(server.port, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0}) as client:
                client.wait_ready()
                if opener == "window_update":
                    frame = WindowUpdateFrame(1, window_increment=len(BODY))
                else:
                    frame = SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: len(BODY)})
                LateUpdateProtocol.late_frame = frame.serialize()
                sid = client.request("/body")
                assert sid == 1
                # The client's own books: it is the one that sent that frame.
                client.streams[sid].recv_window += len(BODY)
                stream = client.response(sid)
        assert LateUpdateProtocol.late_frame == b"", "the sender never waited for the window"
        assert stream.reset_code is None
        assert stream.ended and bytes(stream.data) == BODY

    def test_window_driven_negative_then_raised(self) -> None:
        """
        The client shrinks the window under a response in flight (it goes negative); the frame
        that raises it again comes while the next chunk is handed over, before the wait.
        """
        first, second = 65535, 100_000
        gate = Gate()
        app = Kyoukai("negative")

        @app.route("/big")
        async def big(ctx):
            async def body():
                yield b"n" * first
                await gate.wait()
                yield b"m" * second

            return Response(body())

        with serve(app, LateUpdateComponent, send_timeout=5) as server:
            gate.server = server
            with H2Client(server.port, auto_ack=False) as client:
                client.wait_ready()
                sid = client.request("/big")
                stream = client.streams[sid]
                client.read_until(lambda: stream.received >= first)
                assert gate.reached.wait(TIMEOUT)
                # Window 0 on the server; this SETTINGS takes it to -65535.
                acks = client.settings_acks
                client.update_settings(INITIAL_WINDOW_SIZE=0)
                client.read_until(lambda: client.settings_acks > acks)
                # The late frames (taken as the client's own) raise it again, and the connection's.
                raised = 200_000
                LateUpdateProtocol.late_frame = (
                    SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: raised}).serialize()
                    + WindowUpdateFrame(0, window_increment=raised).serialize()
                )
                client.settings[SettingsFrame.INITIAL_WINDOW_SIZE] = raised
                stream.recv_window += raised
                client.conn_recv_window += raised
                gate.open()
                client.response(sid)
        assert LateUpdateProtocol.late_frame == b"", "the sender never waited"
        assert stream.reset_code is None
        assert stream.ended and stream.received == first + second


class TestEarlyResponse:
    """Item: an early answer (a 413 above all) reaches clients that are still uploading."""

    @pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl (Debian: apt-get install curl)")
    def test_curl_sees_the_413_of_a_too_large_upload(self, tmp_path: Any) -> None:
        upload = tmp_path / "upload.bin"
        upload.write_bytes(b"u" * (32 * MiB))
        with serve(make_app(), H2KyoukaiComponent) as server:
            result = subprocess.run(
                [
                    "curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
                    "--data-binary", f"@{upload}", server.url("/upload"),
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stdout == "413 2"

    def test_httpx_sees_the_413_of_a_too_large_upload(self) -> None:
        with serve(make_app(), H2KyoukaiComponent) as server:
            with httpx.Client(http1=False, http2=True, timeout=TIMEOUT) as client:
                response = client.post(server.url("/upload"), content=b"u" * (32 * MiB))
                assert response.status_code == 413
                assert response.http_version == "HTTP/2"
                # The connection is still good.
                assert client.post(server.url("/upload"), content=b"ok").status_code == 200

    def test_the_rest_of_the_body_is_read_and_the_stream_ends_cleanly(self) -> None:
        with serve(make_app(), H2KyoukaiComponent) as server:
            with H2Client(server.port) as client:
                client.wait_ready()
                sid = client.request("/ignore", "POST", end_stream=False)
                stream = client.response(sid)
                protocol = only_connection(server)
                assert on_loop(server, lambda: discarding(protocol)) == [sid]
                # More than every window: only possible if the credit comes back.
                client.send_body(sid, b"r" * (3 * MiB))
                wait_on_loop(server, lambda: not discarding(protocol))
                after = client.response(client.request("/body"))
        assert stream.status == 200 and bytes(stream.data) == b"ignored\n"
        assert stream.reset_code is None
        assert bytes(after.data) == BODY

    def test_reset_past_max_discard_size(self, caplog: pytest.LogCaptureFixture) -> None:
        with caplog.at_level(logging.DEBUG, "kyoukai.http2"):
            with serve(make_app(), H2KyoukaiComponent, max_discard_size=100_000) as server:
                with H2Client(server.port) as client:
                    client.wait_ready()
                    sid = client.request("/ignore", "POST", end_stream=False)
                    stream = client.response(sid)
                    client.send_available(sid, b"r" * 200_000)
                    client.read_until(lambda: stream.reset_code is not None)
        assert stream.status == 200
        assert stream.reset_code == ErrorCodes.NO_ERROR
        assert "past max_discard_size" in caplog.text

    def test_reset_after_discard_timeout(self, caplog: pytest.LogCaptureFixture) -> None:
        with caplog.at_level(logging.DEBUG, "kyoukai.http2"):
            with serve(make_app(), H2KyoukaiComponent, discard_timeout=0.2) as server:
                with H2Client(server.port) as client:
                    client.wait_ready()
                    sid = client.request("/ignore", "POST", end_stream=False)
                    stream = client.response(sid)
                    # The client stalls: the stream is reset once discard_timeout is over.
                    client.read_until(lambda: stream.reset_code is not None, timeout=TIMEOUT)
        assert stream.reset_code == ErrorCodes.NO_ERROR
        assert "past discard_timeout" in caplog.text

    def test_declared_length_past_the_budget_is_reset_at_once(self) -> None:
        with serve(make_app(), H2KyoukaiComponent, max_discard_size=100_000) as server:
            with H2Client(server.port) as client:
                client.wait_ready()
                sid = client.request("/ignore", "POST", headers=[("content-length", "5000000")], end_stream=False)
                stream = client.response(sid)
                client.read_until(lambda: stream.reset_code is not None)
        assert stream.status == 200 and stream.reset_code == ErrorCodes.NO_ERROR

    def test_discarding_streams_count_toward_max_concurrent_streams(self) -> None:
        with serve(make_app(), H2KyoukaiComponent, max_concurrent_streams=2) as server:
            with H2Client(server.port) as client:
                client.wait_ready()
                first = client.response(client.request("/ignore", "POST", end_stream=False))
                second = client.response(client.request("/ignore", "POST", end_stream=False))
                third = client.response(client.request("/body"))
                client.send_body(first.stream_id, b"done")
                protocol = only_connection(server)
                wait_on_loop(server, lambda: len(discarding(protocol)) == 1)
                fourth = client.response(client.request("/body"))
        assert first.reset_code is None and second.reset_code is None
        assert third.reset_code == ErrorCodes.REFUSED_STREAM
        assert bytes(fourth.data) == BODY
