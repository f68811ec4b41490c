"""Shared fixtures: a real Kyoukai server on 127.0.0.1 in a background thread, TLS material."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from asphalt.core import Context

from kyoukai import Kyoukai
from kyoukai.asphalt import KyoukaiComponent


class RunningServer:
    """A component serving on 127.0.0.1 from its own event loop thread."""

    def __init__(self, component: Any) -> None:
        self.component = component
        self.loop = asyncio.new_event_loop()
        self.context: Context | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.component.port

    def url(self, path: str = "/", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def call(self, coro: Any, timeout: float = 30) -> Any:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> RunningServer:
        self._thread.start()

        async def start() -> None:
            self.context = Context()
            await self.component.start(self.context)

        self.call(start())
        return self

    def stop(self) -> None:
        """Close the context (graceful shutdown of the component) and the loop."""
        if self.context is not None:
            self.call(self.context.close(), timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@contextlib.contextmanager
def serve(app: Kyoukai, component_class: type = KyoukaiComponent, **cfg: Any) -> Iterator[RunningServer]:
    """Serve ``app`` on 127.0.0.1 with a free port for the ``with`` block."""
    cfg.setdefault("ip", "127.0.0.1")
    cfg.setdefault("port", 0)
    server = RunningServer(component_class(app, **cfg)).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def tls_files(tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A certificate for localhost/127.0.0.1 signed by a test CA: paths of cert, key and CA."""
    folder: Path = tmp_path_factory.mktemp("tls")
    cert = tls_ca.issue_cert("localhost", "127.0.0.1")
    paths = {"cert": folder / "cert.pem", "key": folder / "key.pem", "ca": folder / "ca.pem"}
    cert.cert_chain_pems[0].write_to_path(paths["cert"])
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(paths["cert"], append=True)
    cert.private_key_pem.write_to_path(paths["key"])
    tls_ca.cert_pem.write_to_path(paths["ca"])
    return {k: str(v) for k, v in paths.items()}


@pytest.fixture
def client_ssl_context(tls_files: dict[str, str]) -> ssl.SSLContext:
    """A client TLS context trusting the test CA."""
    return ssl.create_default_context(cafile=tls_files["ca"])


@pytest.fixture
def ssl_config(tls_files: dict[str, str]) -> dict[str, Any]:
    """The ``ssl`` config block of :class:`KyoukaiComponent` for the test certificate."""
    return {"enabled": True, "ssl_certfile": tls_files["cert"], "ssl_keyfile": tls_files["key"]}
