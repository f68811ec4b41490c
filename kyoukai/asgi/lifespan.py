"""
The ASGI lifespan protocol: ``lifespan.startup`` before the server listens, ``lifespan.shutdown``
after it stopped. The app runs the ``lifespan`` scope in a task of its own for as long as it
serves; ``state`` is the namespace it fills in at startup, a shallow copy of which every request
scope gets.

An app that raises on the ``lifespan`` scope before it asked for the startup event, or answers
it with a message of another protocol, does not support the protocol: it is served anyway
(config key ``lifespan: auto``, the default), or refused (``lifespan: on``). A startup that
fails (``lifespan.startup.failed``, or an exception after the app took the startup event) stops
the server from starting, with the app's message.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kyoukai.asgi.http_cycle import ASGIApp
from kyoukai.asgi.scope import ASGI_VERSION

logger = logging.getLogger("kyoukai.asgi")

#: The values of the ``lifespan`` config key.
MODES = ("auto", "on", "off")


class LifespanError(RuntimeError):
    """The app's lifespan startup failed (the message says why), or ``lifespan: on`` and it has none."""


class Lifespan:
    """
    The lifespan of an ASGI app.

    :param app: the ASGI application.
    :param mode: ``"auto"``, ``"on"`` or ``"off"`` (see the module documentation).
    """

    def __init__(self, app: ASGIApp, mode: str = "auto") -> None:
        self.app = app
        self.mode = mode
        #: The lifespan state the app filled in at startup.
        self.state: dict[str, Any] = {}
        self._task: asyncio.Task[None] | None = None
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._startup: asyncio.Future[str | None] | None = None
        self._shutdown: asyncio.Future[str | None] | None = None
        self._asked_startup = False
        self._not_lifespan = False
        self._shutting_down = False

    async def startup(self) -> None:
        """
        Send ``lifespan.startup`` and wait for the app's answer.

        :raises LifespanError: the startup failed, or the app has no lifespan and the mode is ``on``.
        """
        self.state = {}
        if self.mode == "off":
            return
        loop = asyncio.get_running_loop()
        self._inbox = asyncio.Queue()
        self._inbox.put_nowait({"type": "lifespan.startup"})
        self._asked_startup = False
        self._shutting_down = False
        self._startup = loop.create_future()
        self._shutdown = loop.create_future()
        self._task = loop.create_task(self._run())
        failure = await self._startup
        if failure is not None:
            raise LifespanError(f"The ASGI app's lifespan startup failed: {failure}")

    async def shutdown(self, timeout: float) -> None:
        """Send ``lifespan.shutdown`` and wait for the app to finish it (up to ``timeout`` seconds)."""
        task, self._task = self._task, None
        if task is None or task.done():
            return
        assert self._shutdown is not None
        self._shutting_down = True
        self._inbox.put_nowait({"type": "lifespan.shutdown"})
        waiting: set[asyncio.Future[Any]] = {self._shutdown, task}
        done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if not done:
            logger.warning("The ASGI app's lifespan shutdown did not finish within %ss; cancelling it.", timeout)
        else:
            if self._shutdown.done() and self._shutdown.result() is not None:
                logger.error("The ASGI app's lifespan shutdown failed: %s", self._shutdown.result())
            # It normally returns right after answering; it gets a moment to.
            await asyncio.wait({task}, timeout=1.0)
        if not task.done():
            task.cancel()
            await asyncio.wait({task})

    async def _receive(self) -> dict[str, Any]:
        message = await self._inbox.get()
        if message["type"] == "lifespan.startup":
            self._asked_startup = True
        return message

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self._answer(self._startup, None)
        elif kind == "lifespan.startup.failed":
            self._answer(self._startup, message.get("message") or "lifespan.startup.failed, with no message")
        elif kind == "lifespan.shutdown.complete":
            self._answer(self._shutdown, None)
        elif kind == "lifespan.shutdown.failed":
            self._answer(self._shutdown, message.get("message") or "lifespan.shutdown.failed, with no message")
        else:
            # An app that answers the lifespan scope with, say, an HTTP response does not speak it.
            self._not_lifespan = True
            raise ValueError(f"the ASGI app sent a message of type {kind!r} in the lifespan scope")

    @staticmethod
    def _answer(future: asyncio.Future[str | None] | None, failure: str | None) -> None:
        if future is not None and not future.done():
            future.set_result(failure)

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": ASGI_VERSION, "state": self.state}
        startup, shutdown = self._startup, self._shutdown
        assert startup is not None and shutdown is not None
        try:
            await self.app(scope, self._receive, self._send)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            what = f"{type(e).__name__}: {e}"
            if not self._asked_startup or self._not_lifespan:
                self._unsupported(f"it raised {what} on the lifespan scope", e)
            elif not startup.done():
                logger.error("The ASGI app's lifespan startup raised %s.", type(e).__name__, exc_info=e)
                # An app that took the startup event without looking at the scope's type fails
                # here too: the message says how to serve it anyway.
                self._answer(startup, f"{what} (lifespan: off serves an app without its lifespan)")
            elif startup.result() is not None:
                # It reported lifespan.startup.failed, then raised (as Starlette does): the failure
                # is reported already.
                logger.debug("The ASGI app's lifespan scope raised after its startup failed.", exc_info=e)
            elif not self._shutting_down:
                logger.error("The ASGI app's lifespan task failed while the app was serving.", exc_info=e)
            else:
                logger.error("The ASGI app's lifespan shutdown raised %s.", type(e).__name__, exc_info=e)
                self._answer(shutdown, what)
        else:
            if not startup.done():
                self._unsupported("it returned from the lifespan scope without answering lifespan.startup", None)
        finally:
            self._answer(startup, None)
            self._answer(shutdown, None)

    def _unsupported(self, why: str, error: Exception | None) -> None:
        assert self._startup is not None
        if self.mode == "on":
            self._answer(self._startup, f"the app does not support the lifespan protocol (lifespan: on): {why}")
            return
        logger.info(
            "The ASGI app does not support the lifespan protocol (%s); serving it without startup and shutdown.",
            why,
        )
        if error is not None:
            logger.debug("Its lifespan scope raised:", exc_info=error)
