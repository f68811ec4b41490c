"""The ring of closed streams answers like h2's own record for the streams it remembers."""

from __future__ import annotations

import pytest
from h2.stream import StreamClosedBy
from h2.utilities import SizeLimitDict

from kyoukai.protocol.h2.closed import ClosedStreams

CYCLE = [*StreamClosedBy, None]


def test_remembers_each_cause_including_none() -> None:
    record = ClosedStreams()
    for number, stream_id in enumerate(range(1, 41, 2)):
        record[stream_id] = CYCLE[number % len(CYCLE)]
    for number, stream_id in enumerate(range(1, 41, 2)):
        assert stream_id in record
        assert record[stream_id] is CYCLE[number % len(CYCLE)]
    assert 3 + 40 not in record
    assert 2 not in record
    assert 0 not in record
    with pytest.raises(KeyError):
        record[99]
    assert record.get(99) is None
    assert len(record) == 20


def test_agrees_with_h2s_dict_over_the_last_span_of_ids() -> None:
    record, reference = ClosedStreams(max_span=1024), SizeLimitDict(size_limit=512)
    for stream_id in range(1, 20_001, 2):
        cause = CYCLE[stream_id % 5]
        record[stream_id] = cause
        reference[stream_id] = cause
    # h2 keeps the last 512 closures; the ring keeps the last 1024 ids, the same 512 streams.
    assert len(record) == len(reference) == 512
    for stream_id, cause in reference.items():
        assert record[stream_id] is cause
    assert 20_001 - 1026 not in record


def test_grows_with_stream_ids_and_stays_small() -> None:
    record = ClosedStreams()
    assert record.nbytes <= 64 * 5
    record[1] = StreamClosedBy.SEND_RST_STREAM
    record[5001] = StreamClosedBy.RECV_END_STREAM
    assert record[1] is StreamClosedBy.SEND_RST_STREAM
    assert record[5001] is StreamClosedBy.RECV_END_STREAM
    for stream_id in range(1, 1_000_001, 2):
        record[stream_id] = StreamClosedBy.SEND_END_STREAM
    assert record.nbytes == 8192 * 5
    assert len(record) == 4096


def test_rejects_a_span_that_is_not_a_power_of_two() -> None:
    with pytest.raises(ValueError, match="power of two"):
        ClosedStreams(max_span=1000)
