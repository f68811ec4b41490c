"""ASGI support. :func:`to_asgi` (or ``app.asgi``) runs a Kyoukai app on any ASGI server."""

from kyoukai.asgi.app_adapter import KyoukaiASGI, to_asgi

__all__ = ["KyoukaiASGI", "to_asgi"]
