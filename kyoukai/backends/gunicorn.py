"""
A gunicorn worker that serves a Kyoukai app (HTTP/1.1 and HTTP/2) on gunicorn's sockets.

::

    gunicorn -k kyoukai.backends.gunicorn.KyoukaiWorker -w 4 -b 127.0.0.1:8000 myapp:app
    gunicorn -k kyoukai.backends.gunicorn.KyoukaiWorker --certfile cert.pem --keyfile key.pem \\
        --http-protocols h1,h2 myapp:app
    gunicorn -k kyoukai.backends.gunicorn.KyoukaiWorker -w 2 config.yml

With ``myapp:app`` each worker serves the app through a :class:`~.KyoukaiComponent`: TLS from
``--certfile``/``--keyfile``, HTTP/2 when ``--http-protocols`` includes ``h2`` (ALPN on TLS;
prior knowledge and h2c upgrade on cleartext), limits from the app's config keys. With an
asphalt ``config.yml`` each worker starts the configured root component, and the Kyoukai
components in it listen on gunicorn's sockets.

Graceful reload (``HUP``) and stop (``TERM``) send GOAWAY / finish in-flight requests within
``--graceful-timeout``; ``--max-requests`` recycles a worker the same way; the heartbeat keeps
gunicorn's ``--timeout`` satisfied while the event loop runs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

from asphalt.core import Context
from asphalt.core.component import component_types
from gunicorn.workers.base import Worker

from kyoukai.app import Kyoukai
from kyoukai.asphalt import KyoukaiBaseComponent, KyoukaiComponent, resolve_app_reference

_CONFIG_SUFFIXES = (".yml", ".yaml")


def _http2_wanted(cfg: Any) -> bool:
    protocols = getattr(cfg, "http_protocols", None) or ()
    if isinstance(protocols, str):
        protocols = [p.strip() for p in protocols.split(",")]
    return "h2" in protocols or os.environ.get("KYOUKAI_HTTP2", "").lower() in ("1", "true", "yes")


class KyoukaiWorker(Worker):
    """A gunicorn worker running an asyncio event loop with Kyoukai's protocols."""

    def load_wsgi(self) -> None:
        # Kyoukai apps are not WSGI callables: resolve the app (or the asphalt config) ourselves.
        uri = getattr(self.app, "app_uri", None) or self.cfg.wsgi_app
        if uri is None:
            raise RuntimeError("KyoukaiWorker needs an app reference (module:attribute) or a config.yml")
        self.app_uri = uri
        self.wsgi = None if uri.endswith(_CONFIG_SUFFIXES) else resolve_app_reference(uri)

    def run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
        sys.exit(0)

    def _components(self) -> tuple[Any, list[KyoukaiBaseComponent]]:
        """The root component to start and the Kyoukai components that serve the sockets."""
        sockets = [s.sock for s in self.sockets]
        if self.wsgi is None:
            import yaml

            with open(self.app_uri) as f:
                config = yaml.safe_load(f)
            root = component_types.create_object(**config["component"])
            KyoukaiBaseComponent.inherited_sockets = sockets
            return root, []
        app: Kyoukai = self.wsgi
        options: dict[str, Any] = dict(app.config)
        options["http2"] = _http2_wanted(self.cfg)
        if self.cfg.is_ssl:
            options["ssl"] = {"enabled": True, "ssl_certfile": self.cfg.certfile, "ssl_keyfile": self.cfg.keyfile}
        options["shutdown_timeout"] = self.cfg.graceful_timeout
        component = KyoukaiComponent(app, **options)
        component.listen_sockets = sockets
        return component, [component]

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def graceful(*_: Any) -> None:
            self.alive = False
            stop.set()

        def quick(*_: Any) -> None:
            self.alive = False
            self.cfg.worker_int(self)
            stop.set()

        loop.add_signal_handler(signal.SIGTERM, graceful)
        loop.add_signal_handler(signal.SIGQUIT, quick)
        loop.add_signal_handler(signal.SIGINT, quick)
        loop.add_signal_handler(signal.SIGUSR1, self.log.reopen_files)
        loop.add_signal_handler(signal.SIGABRT, quick)

        root, served = self._components()
        ctx = Context()
        async with ctx:
            await root.start(ctx)
            served = served or list(KyoukaiBaseComponent.running)
            interval = max(0.1, min(1.0, self.timeout / 4 if self.timeout else 1.0))
            while self.alive:
                self.notify()
                if self.ppid != os.getppid():
                    self.log.info("Parent changed, shutting down: %s", self)
                    break
                if sum(c.metrics.requests for c in served) >= self.max_requests:
                    self.log.info("Autorestarting worker after current request (max_requests=%s).", self.max_requests)
                    break
                try:
                    await asyncio.wait_for(stop.wait(), interval)
                except asyncio.TimeoutError:
                    pass
            self.notify()
        # Leaving the context ran the components' graceful stop (GOAWAY, then drain).
