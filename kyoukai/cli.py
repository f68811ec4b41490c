"""
The ``kyoukai`` command (also ``python -m kyoukai``): ``kyoukai run module:app`` serves an app
for development, with no configuration file; ``kyoukai run --config config.yml`` runs an asphalt
configuration the same way. ``asphalt run config.yml`` stays the way to run in production.

The app is a Kyoukai app or an ASGI 3 application (Starlette, FastAPI, Quart...), told apart
by ``--interface`` (``auto`` by default; see :func:`kyoukai.asgi.serve.served_application`).

Options: ``--host``, ``--port``, ``--http2``, ``--certfile``/``--keyfile`` or ``--dev-cert``,
``--config``, ``--interface``, ``--access-log``/``--no-access-log``, ``--debug`` (see
:mod:`kyoukai.debugpage`) and ``--reload`` (see :mod:`kyoukai.reload`). A mistake in the command
line or in the app reference is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import logging
import os
import socket
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from asphalt.core import Component, Context
from asphalt.core.component import component_types

from kyoukai import loops, reload
from kyoukai.app import Kyoukai
from kyoukai.asgi.serve import INTERFACES, ASGIApplication, served_application
from kyoukai.asphalt import KyoukaiBaseComponent, KyoukaiComponent
from kyoukai.asphalt_config import ConfigError, load_asphalt_config
from kyoukai.runner import Runner

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4444
#: The options that describe the server (with ``--config``: of the file's only ``kyoukai`` component).
SERVER_OPTIONS = ("host", "port", "http2", "certfile", "keyfile", "dev_cert")
#: The top-level keys of an asphalt configuration that ``run_application`` takes.

#: The console logging when the configuration gives none: INFO and up, on stderr.
CONSOLE_LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"console": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "console"}},
    "root": {"handlers": ["console"], "level": "INFO"},
}

logger = logging.getLogger("kyoukai")


class CommandError(Exception):
    """A mistake in the command line or in what it names: reported in one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    """The command line parser of ``kyoukai``."""
    parser = argparse.ArgumentParser(
        prog="kyoukai",
        description="Run a Kyoukai app for development. In production, run an asphalt configuration "
        "with 'asphalt run config.yml'.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="serve an app (module:app) or an asphalt configuration (--config)",
        description="Serve a Kyoukai app until interrupted, logging to the console.",
        allow_abbrev=False,
    )
    run.add_argument(
        "app", nargs="?", help="the app to serve, as module:attribute (e.g. myapp:app); optional with --config"
    )
    run.add_argument("--host", help=f"the address to listen on (default: {DEFAULT_HOST})")
    run.add_argument("--port", type=int, help=f"the port to listen on; 0 picks a free one (default: {DEFAULT_PORT})")
    run.add_argument(
        "--http2",
        action="store_true",
        default=None,
        help="serve HTTP/2 too: ALPN h2 over TLS, h2c (prior knowledge or Upgrade) on cleartext (default: off)",
    )
    run.add_argument("--certfile", help="serve over TLS with this certificate chain (PEM file)")
    run.add_argument("--keyfile", help="the private key of --certfile (PEM file; default: in the --certfile)")
    run.add_argument(
        "--dev-cert",
        action="store_true",
        default=None,
        help="serve over TLS with a self-signed development certificate, kept in .kyoukai-devcert/ "
        "in the working directory (made on first use)",
    )
    run.add_argument(
        "--config",
        metavar="CONFIG.yml",
        help="run this asphalt configuration (as 'asphalt run' does) instead of the app's default server",
    )
    run.add_argument(
        "--interface",
        choices=INTERFACES,
        help="how to serve the app: as a Kyoukai app, as an ASGI 3 application (Starlette, FastAPI, Quart...), "
        "or auto: as what it is (default: auto)",
    )
    run.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="log each request (default: on; with --config, as its logging section says)",
    )
    run.add_argument(
        "--debug", action="store_true", help="answer an unhandled exception with a traceback page (default: off)"
    )
    run.add_argument(
        "--loop",
        choices=loops.CHOICES,
        help=f"the event loop: uvloop when installed (auto), asyncio's own, or uvloop "
        f"(default: ${loops.ENV_VAR}, else auto; with --config, its event_loop_policy key wins over auto)",
    )
    run.add_argument(
        "--reload",
        action="store_true",
        help="restart the server when a .py file under the app's folder changes (default: off)",
    )
    # Set by the reloader on the server processes it starts (see kyoukai.reload).
    run.add_argument("--serve-fd", type=int, action="append", help=argparse.SUPPRESS)
    run.add_argument("--supervisor-fd", type=int, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kyoukai`` command line (``argv`` defaults to :data:`sys.argv`); return the exit status."""
    raw_args = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(raw_args)
    try:
        check_arguments(args)
        if args.reload and args.supervisor_fd is None:
            return supervise(args, raw_args)
        return serve(args)
    except CommandError as e:
        print(f"kyoukai: error: {e}", file=sys.stderr)
        return 2


def check_arguments(args: argparse.Namespace) -> None:
    """Reject missing and contradictory options, with a message naming them."""
    if args.app is None and args.config is None:
        raise CommandError("give the app to serve (module:attribute, e.g. myapp:app) or --config CONFIG.yml")
    if args.config is not None and not Path(args.config).is_file():
        raise CommandError(f"--config {args.config}: no such file")
    if args.port is not None and not 0 <= args.port <= 65535:
        raise CommandError(f"--port {args.port} is not a port number (0 to 65535; 0 picks a free one)")
    if args.keyfile is not None and args.certfile is None:
        raise CommandError("--keyfile needs --certfile")
    if args.dev_cert and args.certfile is not None:
        raise CommandError("--dev-cert and --certfile both choose the certificate: give one of them")
    for option in ("certfile", "keyfile"):
        path = getattr(args, option)
        if path is not None and not Path(path).is_file():
            raise CommandError(f"--{option} {path}: no such file")


# loading the app


def load_app(reference: str) -> Any:
    """
    Import ``module:attribute`` (from the working directory too) and return the object.

    :raises CommandError: the reference is malformed, its module cannot be imported or has no
        such attribute. An exception raised by the module's own code is printed (its traceback
        from the module down) before.
    """
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise CommandError(f"the app {reference!r} is not a module:attribute reference (e.g. myapp:app)")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is None or not (module_name == e.name or module_name.startswith(e.name + ".")):
            _print_import_traceback(e)
        raise CommandError(f"cannot import the app {reference!r}: {e}") from None
    except SyntaxError as e:
        raise CommandError(f"cannot import the app {reference!r}: {_syntax_error(e)}") from None
    except Exception as e:
        _print_import_traceback(e)
        raise CommandError(f"cannot import the app {reference!r}: {type(e).__name__}: {e}") from None
    for name in attribute.split("."):
        try:
            obj = getattr(obj, name)
        except AttributeError:
            raise CommandError(f"cannot find the app {reference!r}: {module_name} has no {attribute!r}") from None
    return obj


def _syntax_error(error: SyntaxError) -> str:
    where = f"{error.filename}, line {error.lineno}" if error.filename else "the module"
    return f"{type(error).__name__} in {where}: {error.msg}"


def _print_import_traceback(error: BaseException) -> None:
    """Print ``error``'s traceback from the first frame of the app's code (not the import machinery)."""
    machinery = (__file__, os.path.dirname(importlib.__file__ or ""))
    tb: TracebackType | None = error.__traceback__
    while tb is not None and (tb.tb_frame.f_code.co_filename.startswith(machinery + ("<frozen ",))):
        tb = tb.tb_next
    traceback.print_exception(type(error), error, tb, file=sys.stderr)


def build_component(
    app: Any, reference: str, options: dict[str, Any], interface: str | None = None
) -> KyoukaiBaseComponent:
    """
    The component serving ``app`` (loaded from ``reference``) with the component config
    ``options``: a Kyoukai app, or an ASGI application (``interface``: ``auto`` by default).
    """
    served = served_app(app, reference, interface)
    try:
        return KyoukaiComponent(served, **{**served.config, **options})
    except ValueError as e:  # a setting out of range, in the app's config
        raise CommandError(f"cannot serve {reference!r}: {e}") from None


def served_app(app: Any, reference: str, interface: str | None) -> Kyoukai | ASGIApplication:
    """``app`` as a component serves it (see :func:`~kyoukai.asgi.serve.served_application`)."""
    try:
        return served_application(app, interface or "auto")
    except TypeError:
        pass
    if interface in (None, "auto"):
        kinds = "a Kyoukai application (kyoukai.Kyoukai) or an ASGI 3 application (async def app(scope, receive, send))"
        hint = "; if it is an ASGI app, --interface asgi serves it"
    elif interface == "kyoukai":
        kinds, hint = "a Kyoukai application (kyoukai.Kyoukai; --interface kyoukai)", ""
    else:
        kinds, hint = "an ASGI application (a callable; --interface asgi)", ""
    raise CommandError(f"{reference!r} is {_a(app)}, not {kinds}{hint}")


def _a(obj: Any) -> str:
    if inspect.isclass(obj):
        return f"the class {obj.__qualname__}"
    name = type(obj).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def server_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~.KyoukaiComponent` config keys set by the server options given on the command line."""
    options: dict[str, Any] = {}
    if args.host is not None:
        options["ip"] = args.host
    if args.port is not None:
        options["port"] = args.port
    if args.http2:
        options["http2"] = True
    if args.certfile is not None:
        options["ssl"] = {"enabled": True, "ssl_certfile": args.certfile, "ssl_keyfile": args.keyfile}
    elif args.dev_cert:
        options["ssl"] = {"enabled": True, "dev_certificate": True}
    return options


def component_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~.KyoukaiComponent` config of ``module:app`` mode: the options, with their defaults."""
    options: dict[str, Any] = {"ip": DEFAULT_HOST, "port": DEFAULT_PORT, **server_overrides(args)}
    if args.debug:
        options["debug"] = True
    return options


# --config mode


def load_config(path: str) -> dict[str, Any]:
    """The ``run_application`` keyword arguments of the asphalt configuration file ``path``."""
    try:
        return load_asphalt_config(path)
    except ConfigError as e:
        raise CommandError(f"--config {e}") from None


def kyoukai_configs(config: dict[str, Any], alias: str | None = None) -> Iterator[dict[str, Any]]:
    """The config mappings of the Kyoukai components in a component tree (``components`` of containers)."""
    if _component_class(config, alias) is not None:
        yield config
    children = config.get("components")
    if isinstance(children, dict):
        for child_alias, child in children.items():
            if child is None:
                child = children[child_alias] = {}
            if isinstance(child, dict):
                yield from kyoukai_configs(child, child_alias)


def _component_class(config: dict[str, Any], alias: str | None = None) -> type[KyoukaiBaseComponent] | None:
    """The Kyoukai component class a component config names (``type``, else its alias), or ``None``."""
    try:
        component_class = component_types.resolve(config.get("type", alias))
    except Exception:
        return None  # not ours to judge: asphalt reports it when it creates the component
    if inspect.isclass(component_class) and issubclass(component_class, KyoukaiBaseComponent):
        return component_class
    return None


def listen_address(config: dict[str, Any]) -> tuple[str, int]:
    """The ``(ip, port)`` a Kyoukai component's config asks for, its class defaults filled in."""
    parameters = inspect.signature(_component_class(config) or KyoukaiComponent).parameters
    return str(config.get("ip", parameters["ip"].default)), int(config.get("port", parameters["port"].default))


def override_server(args: argparse.Namespace, config: dict[str, Any]) -> None:
    """Put the server options given on the command line into the only ``kyoukai`` component of a ``--config`` file."""
    overrides = server_overrides(args)
    if not overrides:
        return
    targets = list(kyoukai_configs(config["component"]))
    if len(targets) != 1 or _component_class(targets[0]) is not KyoukaiComponent:
        given = ", ".join(f"--{name.replace('_', '-')}" for name in SERVER_OPTIONS if getattr(args, name) is not None)
        raise CommandError(
            f"{given} applies to a --config file with one kyoukai component; {args.config} has "
            f"{len(targets)} Kyoukai component(s): set the options on them in the file"
        )
    targets[0].update(overrides)


def apply_overrides(args: argparse.Namespace, config: dict[str, Any]) -> None:
    """
    Put the command line's choices into the Kyoukai components of a ``--config`` file: the server
    options (see :func:`override_server`), the app argument, ``--interface`` and ``--debug`` into each.
    """
    override_server(args, config)
    targets = list(kyoukai_configs(config["component"]))
    if args.interface is not None:
        for target in targets:
            target["interface"] = args.interface
    if args.app is not None:
        if not targets:
            raise CommandError(f"--config {args.config} has no Kyoukai component to serve {args.app!r} with")
        app = served_app(load_app(args.app), args.app, args.interface)
        for target in targets:
            target["app"] = app
    if args.debug:
        if not targets:
            print(f"kyoukai: warning: --debug: --config {args.config} lists no Kyoukai component", file=sys.stderr)
        for target in targets:
            target["debug"] = True


# listening


def bind(host: str, port: int) -> list[socket.socket]:
    """
    Listening sockets on every address of ``host`` (all interfaces for ``""``), all on one port
    (the first's free one for port 0), as asyncio would bind them.
    """
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise CommandError(f"cannot listen on {host!r}: {e.strerror}") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            try:
                sock.bind(address)
            except OSError as e:
                raise CommandError(f"cannot listen on {host or '*'} port {port}: {e.strerror}") from None
            sock.listen(1024)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def bind_all(addresses: Sequence[tuple[str, int]]) -> list[socket.socket]:
    """:func:`bind` for each ``(host, port)``, once each."""
    sockets: list[socket.socket] = []
    try:
        for host, port in dict.fromkeys(addresses):
            sockets += bind(host, port)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def server_addresses(args: argparse.Namespace, config: dict[str, Any] | None) -> list[tuple[str, int]]:
    """The addresses to listen on: the options' in ``module:app`` mode, the components' with ``--config``."""
    if config is None:
        options = component_options(args)
        return [(options["ip"], options["port"])]
    targets = kyoukai_configs(config["component"])
    return [listen_address(target) for target in targets if target.get("run_server", True)]


# serving


class DevServer(Component):
    """
    The root component ``kyoukai run`` starts: the server's root component, then one line per URL
    served on stdout, and the reloader told (``--reload``).
    """

    def __init__(
        self,
        root: Component,
        *,
        stop: Callable[[], None],
        access_log: bool | None = None,
        supervisor: socket.socket | None = None,
        listening: Sequence[socket.socket] = (),
    ) -> None:
        self.root = root
        #: Stops the process gracefully (the runner's stop).
        self.stop = stop
        self.access_log = access_log
        #: The reloader's end of the socket pair, when run by ``--reload``.
        self.supervisor = supervisor
        #: The listening sockets inherited from the reloader.
        self.listening = list(listening)
        self._retiring: asyncio.Task[None] | None = None

    async def start(self, ctx: Context) -> None:
        """Start the root component and announce what it serves."""
        if self.access_log is not None:
            # Set here, after the runner applied the logging configuration.
            logging.getLogger("kyoukai.access").setLevel(logging.INFO if self.access_log else logging.WARNING)
        await self.root.start(ctx)
        served = sorted(KyoukaiBaseComponent.running, key=lambda component: component.port)
        if not served:
            logger.warning("No Kyoukai component is serving: the configuration starts none that listens.")
        for component in served:
            for url in urls(component):
                print(f"Serving {url} ({protocols(component)})", flush=True)
        if self.supervisor is not None:
            self._report_ready(self.supervisor)

    def _report_ready(self, supervisor: socket.socket) -> None:
        """Tell the reloader this process serves, and follow its requests (see :mod:`kyoukai.reload`)."""
        supervisor.sendall(reload.READY)
        supervisor.setblocking(False)
        loop = asyncio.get_running_loop()

        def supervisor_readable() -> None:
            try:
                message = supervisor.recv(64)
            except BlockingIOError:
                return
            except OSError:
                message = b""
            if message == reload.RETIRE:
                self._retiring = loop.create_task(self._retire(supervisor))
            elif not message:
                # The reloader is gone (killed without stopping us): stop rather than serve unsupervised.
                loop.remove_reader(supervisor)
                logger.warning("The reloader exited; stopping.")
                self.stop()

        loop.add_reader(supervisor, supervisor_readable)

    async def _retire(self, supervisor: socket.socket) -> None:
        """
        Stop accepting connections (the new server process accepts them now), and tell the
        reloader once those accepted until then have had time to send their first request: the
        graceful stop that follows answers requests in progress but closes idle connections.
        """
        loop = asyncio.get_running_loop()
        # The listeners are left open, only no longer watched: closing an asyncio server drops
        # the connections it accepted whose transport is not made yet (asyncio's own race).
        for sock in self.listening:
            loop.remove_reader(sock.fileno())
        await asyncio.sleep(reload.RETIRE_GRACE)
        supervisor.sendall(reload.RETIRED)


def urls(component: KyoukaiBaseComponent) -> list[str]:
    """The URLs of ``component``'s listening sockets."""
    scheme = "https" if is_tls(component) else "http"
    found = []
    server = component.server
    for sock in server.sockets if server is not None else ():
        host, port = sock.getsockname()[:2]
        found.append(f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}")
    return found


def is_tls(component: KyoukaiBaseComponent) -> bool:
    """Whether ``component`` serves over TLS."""
    if isinstance(component, KyoukaiComponent):
        return component.ssl_enabled
    return bool(getattr(component, "ssl_certfile", None))


def protocols(component: KyoukaiBaseComponent) -> str:
    """The protocols ``component`` serves, for the ``Serving`` line: ``HTTP/1.1, h2c`` and the like."""
    if isinstance(component, KyoukaiComponent):
        if not component.http2:
            return "HTTP/1.1"
        return "HTTP/1.1, h2" if component.ssl_enabled else "HTTP/1.1, h2c"
    return component.describe()


def serve(args: argparse.Namespace) -> int:
    """Serve until interrupted (SIGINT or SIGTERM stop gracefully); the exit status."""
    inherited = [socket.socket(fileno=fd) for fd in args.serve_fd or ()]
    supervisor = socket.socket(fileno=args.supervisor_fd) if args.supervisor_fd is not None else None
    options: dict[str, Any] = {"logging": CONSOLE_LOGGING}
    if args.config is None:
        component = build_component(load_app(args.app), args.app, component_options(args), args.interface)
        component.listen_sockets = inherited or bind_all(server_addresses(args, None))
        root: Component = component
    else:
        config = load_config(args.config)
        apply_overrides(args, config)
        if inherited:
            # Each Kyoukai component of the file takes the socket bound to its port (or the only one).
            KyoukaiBaseComponent.inherited_sockets = inherited
        try:
            root = component_types.create_object(**config.pop("component"))
        except Exception as e:
            raise CommandError(f"--config {args.config}: cannot create the root component: {e}") from None
        options.update(config)
    if args.loop is not None or "event_loop_policy" not in options:
        try:
            options["event_loop_policy"] = loops.event_loop_policy(args.loop)
        except ValueError as e:
            raise CommandError(str(e)) from None
    try:
        runner = Runner(**options)
        runner.run(
            DevServer(root, stop=runner.stop, access_log=args.access_log, supervisor=supervisor, listening=inherited)
        )
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    return 0


def supervise(args: argparse.Namespace, raw_args: list[str]) -> int:
    """``--reload``: bind once, then run and replace server processes (see :mod:`kyoukai.reload`)."""
    try:
        import watchfiles  # noqa: F401  (checked here, used by kyoukai.reload)
    except ImportError:
        raise CommandError("--reload needs watchfiles: pip install 'kyoukai[reload]'") from None
    config = None
    if args.config is None:
        folder = reload.module_folder(args.app.partition(":")[0])
        extensions: tuple[str, ...] = ()
    else:
        folder = Path(args.config).resolve().parent
        extensions = (".yml", ".yaml")
        config = load_config(args.config)
        override_server(args, config)
    sockets = bind_all(server_addresses(args, config))
    # -B: a .pyc written by one server process could pass for the source of the next one when
    # an edit keeps the file's size within the same second of its modification time.
    command = [sys.executable, "-B", "-m", "kyoukai", *(arg for arg in raw_args if arg != "--reload")]
    return reload.Reloader(command, sockets, folder, extra_extensions=extensions).run()
