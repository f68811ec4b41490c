"""
The event loop Kyoukai's own entry points run on: uvloop when it is installed, asyncio's
otherwise.

``kyoukai run`` (option ``--loop``) and :meth:`Kyoukai.run <kyoukai.app.Kyoukai.run>` (argument
``loop``) ask :func:`resolve`; both default to the environment variable ``KYOUKAI_LOOP``, then to
``auto``. ``asphalt run`` keeps asphalt's own choice (its ``--loop`` option, or the
``event_loop_policy`` key of the configuration file), and so does the gunicorn worker.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import Callable

#: The environment variable that sets the default choice.
ENV_VAR = "KYOUKAI_LOOP"
#: ``auto``: uvloop when it is installed; ``asyncio``: always asyncio's own loop; ``uvloop``: uvloop
#: or an error.
CHOICES = ("auto", "asyncio", "uvloop")


def uvloop_installed() -> bool:
    """Whether uvloop can be imported."""
    return importlib.util.find_spec("uvloop") is not None


def resolve(choice: str | None = None) -> str:
    """
    The loop to run, ``"uvloop"`` or ``"asyncio"``, for ``choice`` (default: ``$KYOUKAI_LOOP``,
    else ``"auto"``).

    :raises ValueError: for a choice not in :data:`CHOICES`, or ``uvloop`` when it is not installed.
    """
    source = "the loop" if choice else f"${ENV_VAR}"
    if not choice:
        choice = os.environ.get(ENV_VAR) or "auto"
    if choice not in CHOICES:
        raise ValueError(f"{source}: {choice!r} is not one of {', '.join(CHOICES)}")
    if choice == "auto":
        return "uvloop" if uvloop_installed() else "asyncio"
    if choice == "uvloop" and not uvloop_installed():
        raise ValueError(f"{source} is uvloop, which is not installed: pip install 'Kyoukai[uvloop]'")
    return choice


def event_loop_policy(choice: str | None = None) -> str | None:
    """The ``event_loop_policy`` for :func:`asphalt.core.run_application` (``None``: asyncio's)."""
    return "uvloop" if resolve(choice) == "uvloop" else None


def loop_factory(choice: str | None = None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The ``loop_factory`` for :class:`asyncio.Runner` for ``choice`` (see :func:`resolve`); ``None``: asyncio's."""
    if resolve(choice) == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


_hinted = False


def hint_uvloop(loop: asyncio.AbstractEventLoop) -> bool:
    """
    Whether to suggest uvloop to a server started on ``loop``: once per process, when uvloop is
    installed, ``loop`` is not one of its loops and ``$KYOUKAI_LOOP`` does not ask for asyncio.
    """
    global _hinted
    if _hinted or type(loop).__module__.startswith("uvloop") or os.environ.get(ENV_VAR) == "asyncio":
        return False
    if not uvloop_installed():
        return False
    _hinted = True
    return True
