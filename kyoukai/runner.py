"""
Running a root component until it is told to stop: what ``kyoukai run`` and :meth:`Kyoukai.run
<kyoukai.app.Kyoukai.run>` use.

It takes the arguments of asphalt's :func:`~asphalt.core.run_application` and logs the same
lines, with one difference that matters for signals. asphalt starts the component in one run of
the event loop and serves in a second one; a signal that arrives between the two is lost on
uvloop (which listens for signals only while it runs), and a stop asked for as the first run ends
is forgotten. Here the start, the serving and the stop are one coroutine in one run of the loop,
the signal handlers are in place before the start, and the stop is an :class:`asyncio.Event`: set
before it is waited for, it is not missed.
"""

from __future__ import annotations

import asyncio
import logging
import logging.config
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asphalt.core import Component, Context
from asphalt.core.runner import policies
from asphalt.core.utils import qualified_name

logger = logging.getLogger("asphalt.core.runner")

#: The exit status after a second interrupt stopped the process without waiting (128 + SIGINT).
INTERRUPTED = 130


class Runner:
    """
    Run a root component: configure logging, make the event loop, start the component within
    ``start_timeout`` seconds, serve until :meth:`stop` (SIGINT and SIGTERM call it), then close the
    root context, which stops the component gracefully. A second SIGINT (Ctrl-C) stops at once.
    """

    def __init__(
        self,
        *,
        event_loop_policy: str | None = None,
        max_threads: int | None = None,
        logging: dict[str, Any] | int | None = logging.INFO,
        start_timeout: float | None = 10,
    ) -> None:
        self.event_loop_policy = event_loop_policy
        self.max_threads = max_threads
        self.logging = logging
        self.start_timeout = start_timeout
        self._stopping = asyncio.Event()
        #: Set to stop at once (a second Ctrl-C).
        self._aborted = False
        #: SIGINTs received.
        self._interrupts = 0

    def stop(self) -> None:
        """Stop gracefully (from the event loop's thread); a no-op once stopping."""
        self._stopping.set()

    def run(self, root: Component) -> None:
        """
        Serve ``root`` until stopped.

        :raises SystemExit: with status 1 if the component failed to start, with the status of a
            :exc:`SystemExit` raised while serving, or with :data:`INTERRUPTED` after a second Ctrl-C.
        """
        self._configure_logging()
        logger.info("Running in %s mode", "development" if __debug__ else "production")
        if self.event_loop_policy:
            policy = policies.resolve(self.event_loop_policy)()
            asyncio.set_event_loop_policy(policy)
            logger.info("Switched event loop policy to %s", qualified_name(policy))
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            if self.max_threads is not None:
                loop.set_default_executor(ThreadPoolExecutor(self.max_threads))
                logger.info("Installed a new thread pool executor with max_workers=%d", self.max_threads)
            exit_code = self._run_until_stopped(loop, loop.create_task(self._serve(root)))
            if exit_code != INTERRUPTED:
                loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
            asyncio.set_event_loop(None)
            logger.info("Application stopped")
        logging.shutdown()
        if exit_code:
            sys.exit(exit_code)

    def _configure_logging(self) -> None:
        if isinstance(self.logging, dict):
            logging.config.dictConfig(self.logging)
        elif isinstance(self.logging, int):
            logging.basicConfig(level=self.logging)

    def _run_until_stopped(self, loop: asyncio.AbstractEventLoop, main: asyncio.Task[int]) -> int:
        """
        Run the loop until ``main`` ends or a second Ctrl-C aborts it. A KeyboardInterrupt or
        SystemExit raised out of the loop (by the application, or by a third Ctrl-C) asks for
        the graceful stop and runs the loop again, or ends it at once once stopping.
        """
        main.add_done_callback(lambda _: loop.stop())
        exit_code: int | None = None
        previous = self._handle_signals(loop)
        try:
            while True:
                try:
                    loop.run_forever()
                except KeyboardInterrupt:
                    if self._stopping.is_set() or self._interrupts > 1:
                        self._aborted = True
                    else:
                        logger.info("Interrupted; stopping gracefully.")
                        self.stop()
                except SystemExit as e:
                    exit_code = _status(e)
                    self.stop()
                if self._aborted:
                    logger.warning("Interrupted again: stopping at once, without waiting for requests in progress.")
                    if main.done() and not main.cancelled():
                        main.exception()  # the KeyboardInterrupt that ended it: reported just above
                    # Left as it is, by request: no "Task was destroyed but it is pending!" for it.
                    main._log_destroy_pending = False  # type: ignore[attr-defined]
                    return INTERRUPTED
                if main.done():
                    try:
                        code = main.result()
                    except KeyboardInterrupt:
                        return INTERRUPTED
                    except SystemExit as e:
                        return _status(e)
                    return code if exit_code is None else exit_code
        finally:
            self._restore_signals(loop, previous)

    async def _serve(self, root: Component) -> int:
        logger.info("Starting application")
        try:
            async with Context() as ctx:
                try:
                    await asyncio.wait_for(root.start(ctx), self.start_timeout)
                except TimeoutError:
                    logger.error("Timeout waiting for the root component to start")
                    raise
                except Exception:
                    logger.exception("Error during application startup")
                    raise
                logger.info("Application started")
                await self._stopping.wait()
                logger.info("Stopping application")
        except Exception:
            return 1
        return 0

    # signals

    def _handle_signals(self, loop: asyncio.AbstractEventLoop) -> Any:
        """
        SIGTERM through the loop; SIGINT through a handler of our own (as :class:`asyncio.Runner`
        does), so that it still counts while the loop is held up: the first stops gracefully, the
        second at once (both carried out by the loop, never raised in the middle of other code,
        where a KeyboardInterrupt can leave a lock half taken); a third, if the loop has not got
        to the second, raises KeyboardInterrupt wherever the code is stuck. The previous SIGINT
        handler, to restore (``None``: none was installed).
        """
        try:
            loop.add_signal_handler(signal.SIGTERM, self._on_sigterm)
        except (NotImplementedError, RuntimeError, ValueError):  # pragma: no cover  (no signals here)
            pass
        if threading.current_thread() is not threading.main_thread():
            return None
        if signal.getsignal(signal.SIGINT) not in (signal.default_int_handler, signal.SIG_DFL, signal.SIG_IGN):
            return None  # the application's own handler stays

        def on_sigint(signum: int, frame: Any) -> None:
            self._interrupts += 1
            if self._interrupts > 2 or (self._interrupts == 2 and self._aborted):
                raise KeyboardInterrupt
            # Only thread-safe calls here: this runs between any two bytecodes of the main thread.
            loop.call_soon_threadsafe(self._on_sigint)

        return signal.signal(signal.SIGINT, on_sigint)

    def _restore_signals(self, loop: asyncio.AbstractEventLoop, previous: Any) -> None:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        if not loop.is_closed():
            try:
                loop.remove_signal_handler(signal.SIGTERM)
            except (NotImplementedError, RuntimeError, ValueError):  # pragma: no cover
                pass

    def _on_sigint(self) -> None:
        if self._stopping.is_set():
            self._aborted = True
            asyncio.get_running_loop().stop()
            return
        logger.info("Received SIGINT; stopping gracefully (Ctrl-C again to stop at once).")
        self.stop()

    def _on_sigterm(self) -> None:
        if not self._stopping.is_set():
            logger.info("Received SIGTERM; stopping gracefully.")
            self.stop()


def _status(exit: SystemExit) -> int:
    """The process status ``sys.exit(code)`` asks for: 0 for none, 1 for a message (logged)."""
    if exit.code is None:
        return 0
    if isinstance(exit.code, int):
        return exit.code
    logger.error("Exiting: %s", exit.code)
    return 1
