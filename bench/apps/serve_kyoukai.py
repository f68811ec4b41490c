"""
Serve ``kyoukai_app`` (or the ASGI app ``asgi_app`` or ``starlette_app`` with ``--app``) on one
port until killed: HTTP/2 over TLS, cleartext HTTP/2 with prior knowledge (h2c), HTTP/1.1, or
HTTP/1.1 over TLS.

    python bench/apps/serve_kyoukai.py --protocol h2c --port 8443 [--app asgi_app] [--uvloop] [--access-log]

The loop is asyncio's unless ``--uvloop`` is given, whatever Kyoukai would pick by itself: the
benchmark runs every server on the same loop.
"""

import argparse
import asyncio
import importlib
import logging

from asphalt.core import Context

from kyoukai import KyoukaiComponent
from kyoukai.backends.http2 import H2KyoukaiComponent

#: The modules ``--app`` may name; each has an ``app``.
APPS = ("kyoukai_app", "asgi_app", "starlette_app")
#: The protocols, and whether each needs ``--certfile`` and ``--keyfile``.
PROTOCOLS = {"h2": True, "h2c": False, "h1": False, "h1tls": True}


def make_component(args: argparse.Namespace):
    # The components detect an ASGI app themselves (config key ``interface: auto``).
    app = importlib.import_module(args.app).app
    if args.protocol == "h1":
        return KyoukaiComponent(app, "127.0.0.1", args.port)
    if args.protocol == "h1tls":
        tls = {"enabled": True, "ssl_certfile": args.certfile, "ssl_keyfile": args.keyfile}
        return KyoukaiComponent(app, "127.0.0.1", args.port, ssl=tls)
    if args.protocol == "h2c":
        return H2KyoukaiComponent(app, ip="127.0.0.1", port=args.port)
    return H2KyoukaiComponent(app, args.keyfile, args.certfile, ip="127.0.0.1", port=args.port)


async def serve(args: argparse.Namespace) -> None:
    component = make_component(args)
    async with Context() as ctx:
        await component.start(ctx)
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", choices=tuple(PROTOCOLS), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--app", choices=APPS, default="kyoukai_app", help="the module whose app to serve")
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="log at INFO to stderr, access log included, as asphalt's default logging does (default: WARNING)",
    )
    args = parser.parse_args()
    if PROTOCOLS[args.protocol] and not (args.certfile and args.keyfile):
        parser.error(f"--protocol {args.protocol} (TLS) needs --certfile and --keyfile")
    logging.basicConfig(level=logging.INFO if args.access_log else logging.WARNING)
    loop_factory = asyncio.SelectorEventLoop
    if args.uvloop:
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(args))


if __name__ == "__main__":
    main()
