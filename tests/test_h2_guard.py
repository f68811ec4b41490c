"""The HTTP/2 abuse budgets, driven with bytes and a fake clock (no sockets)."""

from __future__ import annotations

from h2.errors import ErrorCodes
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from kyoukai.protocol.h2.guard import ConnectionGuard, RateBudget
from kyoukai.settings import ServerSettings

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_guard(**settings: object) -> tuple[ConnectionGuard, FakeClock]:
    clock = FakeClock()
    guard = ConnectionGuard(ServerSettings(**settings), clock)
    assert guard.feed(PREFACE + SettingsFrame(0).serialize()) is None
    return guard, clock


def test_rate_budget_refills_with_time() -> None:
    clock = FakeClock()
    budget = RateBudget(3, 1.0, clock)
    assert [budget.spend() for _ in range(4)] == [True, True, True, False]
    clock.now += 2.0
    assert budget.spend() is True


def test_ping_flood_exhausts_control_budget() -> None:
    guard, _ = make_guard(max_control_frames=50, control_frame_rate=1.0)
    frames = b"".join(PingFrame(0, opaque_data=b"12345678").serialize() for _ in range(50))
    assert guard.feed(frames) is None
    violation = guard.feed(PingFrame(0).serialize())
    assert violation is not None
    assert violation.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert "max_control_frames=50" in violation.message


def test_steady_control_frames_within_rate_are_allowed() -> None:
    guard, clock = make_guard(max_control_frames=10, control_frame_rate=10.0)
    for _ in range(100):
        clock.now += 0.2
        assert guard.feed(SettingsFrame(0).serialize() + PriorityFrame(1).serialize()) is None


def test_each_control_kind_is_counted() -> None:
    kinds = [
        SettingsFrame(0).serialize(),
        PriorityFrame(3).serialize(),
        DataFrame(1, data=b"").serialize(),
        WindowUpdateFrame(1, window_increment=1).serialize(),
        b"\x00\x00\x00\xfa\x00\x00\x00\x00\x00",  # an unknown frame type, empty
    ]
    for frame in kinds:
        guard, _ = make_guard(max_control_frames=3, control_frame_rate=0.001)
        results = [guard.feed(frame) for _ in range(5)]
        assert results[:3] == [None, None, None], frame
        assert results[3] is not None, frame


def test_large_window_updates_and_data_are_free() -> None:
    guard, _ = make_guard(max_control_frames=2, control_frame_rate=0.001)
    for _ in range(100):
        assert guard.feed(WindowUpdateFrame(0, window_increment=65536).serialize()) is None
        assert guard.feed(DataFrame(1, data=b"x" * 100).serialize()) is None
        assert guard.feed(DataFrame(1, data=b"", flags=["END_STREAM"]).serialize()) is None


def test_rapid_reset_exhausts_reset_budget() -> None:
    guard, _ = make_guard(max_stream_resets=20, stream_reset_rate=0.001)
    violation = None
    sent = 0
    for stream_id in range(1, 200, 2):
        frames = HeadersFrame(stream_id, data=b"\x82", flags=["END_HEADERS"]).serialize()
        frames += RstStreamFrame(stream_id, error_code=8).serialize()
        violation = guard.feed(frames)
        sent += 1
        if violation:
            break
    assert violation is not None and sent == 21
    assert "max_stream_resets=20" in violation.message


def test_server_side_resets_share_the_budget() -> None:
    guard, _ = make_guard(max_stream_resets=5, stream_reset_rate=0.001)
    assert all(guard.count_reset() is None for _ in range(5))
    assert guard.count_reset() is not None


def test_continuation_flood_is_refused_before_buffering() -> None:
    guard, _ = make_guard(max_header_size=16384)
    assert guard.feed(HeadersFrame(1, data=b"x" * 16000).serialize()) is None
    assert guard.header_block_open
    assert guard.feed(ContinuationFrame(1, data=b"y" * 16000).serialize()) is None
    violation = guard.feed(ContinuationFrame(1, data=b"y" * 16000).serialize())
    assert violation is not None and "max_header_size=16384" in violation.message


def test_header_block_state_tracks_end_headers() -> None:
    guard, _ = make_guard()
    guard.feed(HeadersFrame(1, data=b"x").serialize())
    assert guard.header_block_open
    guard.feed(ContinuationFrame(1, data=b"y", flags=["END_HEADERS"]).serialize())
    assert not guard.header_block_open


def test_frames_split_at_any_byte_are_counted_once() -> None:
    guard, _ = make_guard()
    stream = b"".join(
        [
            SettingsFrame(0).serialize(),
            HeadersFrame(1, data=b"abc", flags=["END_HEADERS"]).serialize(),
            DataFrame(1, data=b"z" * 1000).serialize(),
            PingFrame(0).serialize(),
        ]
    )
    for byte in range(len(stream)):
        assert guard.feed(stream[byte : byte + 1]) is None
    assert guard.frame_counts == {4: 2, 1: 1, 0: 1, 6: 1}


def test_preface_must_be_followed_by_settings() -> None:
    guard = ConnectionGuard(ServerSettings())
    violation = guard.feed(PREFACE + PingFrame(0).serialize())
    assert violation is not None and violation.error_code == ErrorCodes.PROTOCOL_ERROR
    guard = ConnectionGuard(ServerSettings())
    assert guard.feed(PREFACE + SettingsFrame(0, flags=["ACK"]).serialize()) is not None


def test_data_in_the_same_read_as_its_headers_is_not_a_closed_stream_frame() -> None:
    guard = ConnectionGuard(ServerSettings(max_stream_resets=2, stream_reset_rate=0.001), is_active=lambda sid: False)
    guard.feed(PREFACE + SettingsFrame(0).serialize())
    request = HeadersFrame(1, data=b"\x83", flags=["END_HEADERS"]).serialize()
    request += b"".join(DataFrame(1, data=b"x").serialize() for _ in range(10))
    assert guard.feed(request) is None
    # Later, with the stream gone, its DATA spends the reset budget.
    late = DataFrame(1, data=b"x").serialize()
    assert [guard.feed(late) is None for _ in range(3)] == [True, True, False]
