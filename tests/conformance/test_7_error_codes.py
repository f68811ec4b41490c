"""RFC 9113 section 7: unknown or unsupported error codes MUST NOT trigger any special behaviour."""

from __future__ import annotations

import pytest
from h2.errors import ErrorCodes

from .h2conf import expect_ignored, goaway_frame, headers_frame, rst_stream_frame


@pytest.mark.parametrize("error_code", [0xFF, 0x7FFFFFFF])
def test_rst_stream_with_unknown_error_code(target, client, error_code):
    """RST_STREAM with an unknown error code resets that stream; the connection carries on."""
    stream_id = client.next_id()
    client.send_raw(headers_frame(stream_id, client.request_block("/hold", "POST"), end_stream=False))
    expect_ignored(client, rst_stream_frame(stream_id, error_code))
    target.assert_serves(client)


@pytest.mark.parametrize("error_code", [0xFF, 0x7FFFFFFF])
def test_goaway_with_unknown_error_code(client, error_code):
    """
    GOAWAY with an unknown error code is a GOAWAY like any other: the server does not answer it
    with an error of its own (any GOAWAY it sends says NO_ERROR) and the connection ends (as h2spec
    expects).
    """
    client.send_raw(goaway_frame(0, error_code))
    client.assert_closed()
    if client.goaway is not None:
        assert client.goaway.error_code == ErrorCodes.NO_ERROR, client.describe_frames()
