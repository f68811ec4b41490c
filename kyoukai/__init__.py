"""
Kyoukai: an asyncio web framework on asphalt, werkzeug and h2, serving HTTP/1.1 and HTTP/2.
"""

from kyoukai.app import Kyoukai
from kyoukai.asphalt import KyoukaiBaseComponent, KyoukaiComponent
from kyoukai.blueprint import Blueprint
from kyoukai.context import HTTPRequestContext
from kyoukai.route import Route
from kyoukai.routegroup import RouteGroup
from kyoukai.testing import TestKyoukai
from kyoukai.version import __version__
from kyoukai.websocket import WebSocket, WebSocketDisconnect

__all__ = [
    "Blueprint",
    "HTTPRequestContext",
    "Kyoukai",
    "KyoukaiBaseComponent",
    "KyoukaiComponent",
    "Route",
    "RouteGroup",
    "TestKyoukai",
    "WebSocket",
    "WebSocketDisconnect",
    "__version__",
]
