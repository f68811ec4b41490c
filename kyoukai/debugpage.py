"""
The debug page: with ``debug`` on, an unhandled exception in a handler answers a 500 page
showing its traceback.

The traceback is rendered by werkzeug's :class:`~werkzeug.debug.tbtools.DebugTraceback`, as a
static page: no interactive console, no code evaluation, no PIN, no script and no URL that
reaches back into the server. It still shows source lines, file paths and exception messages,
so a server with ``debug`` on must not be reachable by others: :func:`warn_if_exposed` says so
at start when it listens on an address other than loopback.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import traceback
from collections.abc import Iterable

from markupsafe import escape

logger = logging.getLogger("kyoukai")

#: The content type of the debug page.
CONTENT_TYPE = "text/html; charset=utf-8"

# The classes are those of werkzeug's traceback HTML. Without werkzeug's script the lines around
# each frame's current line would stay hidden: the app's own frames show them.
_STYLE = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 0; padding: 1em 2em; color: #000; background: #fff; }
h1 { font-size: 1.6em; margin: 0 0 .3em; color: #b11; }
p.errormsg { font: 1.1em monospace; white-space: pre-wrap; margin: 0 0 1em; }
h3 { font-size: 1.1em; font-weight: normal; margin: 1em 0 .5em; }
div.traceback ul { list-style: none; margin: 0; padding: 0; }
div.traceback h4 { font-size: 13px; font-weight: normal; margin: .7em 0 .2em; }
div.traceback cite.filename, div.traceback code.function { font-style: normal; color: #333; }
div.traceback pre { font: 13px monospace; margin: 0; padding: 2px 6px; background: #f4f4f4; }
div.traceback pre.current { background: #fde8e8; }
div.traceback pre.before, div.traceback pre.after { color: #555; }
div.traceback div.source.library pre.before, div.traceback div.source.library pre.after { display: none; }
div.traceback div.source.library { opacity: .6; }
div.traceback span.ws { white-space: pre; }
div.traceback blockquote, pre.syntaxerror { font: 14px monospace; margin: 1em 0; padding: .5em 1em;
  background: #fde8e8; white-space: pre-wrap; }
div.exc-divider { margin: 1em 0 .3em; font-weight: bold; }
details { margin-top: 1.5em; }
details pre { font: 13px monospace; background: #f4f4f4; padding: 1em; overflow: auto; }
footer { margin-top: 2em; color: #777; font-size: 13px; }
"""

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} // Kyoukai debug page</title>
<style>{style}</style>
</head>
<body>
<h1>{exception_type}</h1>
<p class="errormsg">{exception}</p>
{summary}
<details><summary>Plain text traceback</summary><pre>{plaintext}</pre></details>
<footer>Shown because <code>debug</code> is on. Never turn it on for a server others can reach.</footer>
</body>
</html>
"""


def render(exc: BaseException) -> str:
    """The HTML page showing ``exc`` and its traceback (chained exceptions included)."""
    # Imported here: werkzeug.debug is only needed once a handler fails with debug on.
    from werkzeug.debug.tbtools import DebugTraceback

    debug_traceback = DebugTraceback(exc, skip=_framework_frames(exc))
    message = "".join(traceback.format_exception_only(exc)).strip()
    return _PAGE.format(
        title=escape(message.splitlines()[0]),
        style=_STYLE,
        exception_type=escape(type(exc).__name__),
        exception=escape(message),
        summary=debug_traceback.render_traceback_html(include_title=True),
        plaintext=escape(debug_traceback.render_traceback_text()),
    )


def _framework_frames(exc: BaseException) -> int:
    """How many outermost frames of the traceback are Kyoukai's own (dispatch, route invocation)."""
    package = os.path.dirname(__file__) + os.sep
    count = 0
    tb = exc.__traceback__
    # The innermost frame always stays, even when it is Kyoukai's (an error raised by the framework).
    while tb is not None and tb.tb_next is not None and tb.tb_frame.f_code.co_filename.startswith(package):
        count += 1
        tb = tb.tb_next
    return count


def is_loopback(address: str) -> bool:
    """Whether ``address`` (an IP address or ``localhost``) is only reachable from this machine."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def warn_if_exposed(sockets: Iterable[socket.socket]) -> None:
    """Log a warning if any of ``sockets`` (a debug server's) listens on a non-loopback address."""
    for sock in sockets:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            continue  # a Unix socket is as reachable as its file permissions allow
        address = sock.getsockname()[0]
        if not is_loopback(address):
            logger.warning(
                "debug is on and the server listens on %s, which is not a loopback address: anyone who can "
                "reach it sees the tracebacks, source lines and paths of failing requests. Turn debug off "
                "or listen on 127.0.0.1.",
                address,
            )
