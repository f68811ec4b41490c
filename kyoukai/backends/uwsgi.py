"""
Kyoukai 2.2's uWSGI adapter, kept as names only: Kyoukai no longer runs under uWSGI (it ran each
request on a greenlet of uWSGI's asyncio mode). The names import, so 2.2 code loads; using them
raises a :class:`RuntimeError` that gives the command to use instead: gunicorn with Kyoukai's
worker class :class:`~kyoukai.backends.gunicorn.KyoukaiWorker` (see the deployment guide).

.. code-block:: console

    $ gunicorn -k kyoukai.backends.gunicorn.KyoukaiWorker myapp:app
    $ gunicorn -k kyoukai.backends.gunicorn.KyoukaiWorker config.yml
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

#: The gunicorn worker class that replaces the uWSGI adapter.
WORKER_CLASS = "kyoukai.backends.gunicorn.KyoukaiWorker"


def unsupported(what: str, target: str = "myapp:app (your module and its app)") -> RuntimeError:
    """The error raised by the 2.2 uWSGI names: ``what`` was used; ``target`` is what to serve."""
    return RuntimeError(
        f"{what}: Kyoukai no longer runs under uWSGI. Serve the app with gunicorn and Kyoukai's worker "
        f"class {WORKER_CLASS} instead: gunicorn -k {WORKER_CLASS} {target} "
        "(gunicorn comes with the 'gunicorn' extra: pip install 'Kyoukai[gunicorn]'); "
        "or without gunicorn: asphalt run config.yml."
    )


def uwsgi_entry_point(func: Callable[..., Any]) -> NoReturn:
    """Kyoukai 2.2's greenlet wrapper for uWSGI; raises :class:`RuntimeError` (see the module)."""
    raise unsupported(f"kyoukai.backends.uwsgi.uwsgi_entry_point({getattr(func, '__name__', func)!r})")


class uWSGIAdapter:
    """Kyoukai 2.2's uWSGI adapter; creating one raises :class:`RuntimeError` (see the module)."""

    def __init__(self, app: Any, base_context: Any = None) -> None:
        raise unsupported("kyoukai.backends.uwsgi.uWSGIAdapter(app)")

    @classmethod
    def from_asphalt_config(cls, filename: str) -> uWSGIAdapter:
        """Raises :class:`RuntimeError`: serve ``filename`` with gunicorn's Kyoukai worker instead."""
        raise unsupported(f"kyoukai.backends.uwsgi.uWSGIAdapter.from_asphalt_config({filename!r})", filename)
