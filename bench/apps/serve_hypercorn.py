"""
The ``hypercorn`` command line, unchanged but for one detail: HTTP/1.1 responses carry a
reason phrase (``HTTP/1.1 200 OK``).

Hypercorn sends ``HTTP/1.1 200 `` (an empty reason, which RFC 9112 allows). h2load ``--h1``
records a response's status only from the reason phrase, so it would count every Hypercorn
HTTP/1.1 response as failed. The phrase costs a few bytes and a lookup per response.

    python bench/apps/serve_hypercorn.py [hypercorn options] asgi_app:app
"""

import sys
from http import HTTPStatus

import h11
from hypercorn.__main__ import main
from hypercorn.protocol.h11 import H11Protocol

_send_h11_event = H11Protocol._send_h11_event


async def _send_with_reason(self, event) -> None:
    if type(event) is h11.Response and not event.reason:
        # h11 events are frozen dataclasses; this one is not shared, so set the field in place.
        object.__setattr__(event, "reason", HTTPStatus(event.status_code).phrase.encode())
    await _send_h11_event(self, event)


H11Protocol._send_h11_event = _send_with_reason

if __name__ == "__main__":
    sys.exit(main())
