"""
Behind a reverse proxy: the client's address, scheme and host from the ``Forwarded``
(RFC 7239) or ``X-Forwarded-For/-Proto/-Host/-Port`` headers, believed only when the request
comes from a trusted proxy.

Config key ``forwarded_allow_ips``: the addresses and networks of the trusted proxies, as a
list (``["127.0.0.1", "10.0.0.0/8"]``) or a comma-separated string; ``"*"`` trusts every peer.
The default, empty, trusts nobody: the headers are ignored, since any client can send them.

When the peer is trusted, :func:`rewrite_environ` walks the forwarded addresses from the
nearest hop outwards, past every address that is itself a trusted proxy, and the first one that
is not is the client. ``REMOTE_ADDR`` (and ``REMOTE_PORT``), ``wsgi.url_scheme``, ``HTTP_HOST``,
``SERVER_NAME`` and ``SERVER_PORT`` get the values that hop reported; the replaced values are
kept in ``environ["kyoukai.proxy.orig"]``. ``Forwarded`` wins over ``X-Forwarded-*`` when a
request has both.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from typing import Any

from werkzeug.wrappers import Request

from kyoukai.wsgi import _split_host

#: The config key naming the trusted proxies.
CONFIG_KEY = "forwarded_allow_ips"

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_HOST = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::\d{1,5})?$")
_PORT = re.compile(r"^\d{1,5}$")
_SCHEMES = frozenset({"http", "https"})
#: Request attributes werkzeug derives from the environ and caches on first use.
_CACHED_ON_REQUEST = ("host", "url", "base_url", "root_url", "host_url")


class TrustedProxies:
    """
    The peers whose forwarding headers are believed.

    :param allowed: IP addresses and networks (``"10.0.0.0/8"``); ``"*"`` trusts every peer.
    :raises ValueError: naming ``forwarded_allow_ips`` and the entry that is not an address.
    """

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        self.trust_all = False
        self._addresses: set[_Address] = set()
        self._networks: list[_Network] = []
        for entry in allowed:
            entry = str(entry).strip()
            if not entry:
                continue
            if entry == "*":
                self.trust_all = True
                continue
            try:
                network = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"config key {CONFIG_KEY!r}: {entry!r} is not an IP address or network (or '*')"
                ) from None
            if network.num_addresses == 1:
                self._addresses.add(network.network_address)
            else:
                self._networks.append(network)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TrustedProxies:
        """The trusted proxies named by the ``forwarded_allow_ips`` key of ``config``."""
        value = config.get(CONFIG_KEY) or ()
        if isinstance(value, str):
            value = value.split(",")
        elif not isinstance(value, (list, tuple, set, frozenset)):
            raise ValueError(f"config key {CONFIG_KEY!r} must be a list of addresses, not {value!r}")
        return cls(value)

    def __bool__(self) -> bool:
        return self.trust_all or bool(self._addresses) or bool(self._networks)

    def trusts(self, address: str | None) -> bool:
        """Whether ``address`` (an IP address as a string) is a trusted proxy."""
        ip = _parse_ip(address)
        if ip is None:
            return False
        if self.trust_all or ip in self._addresses:
            return True
        return any(ip in network for network in self._networks)


def apply_forwarded(request: Request, proxies: TrustedProxies) -> None:
    """
    Rewrite ``request.environ`` with :func:`rewrite_environ`, and the request attributes
    werkzeug copied from it (``remote_addr``, ``scheme``, ``server``, the cached URLs).
    """
    if not rewrite_environ(request.environ, proxies):
        return
    environ = request.environ
    request.remote_addr = environ["REMOTE_ADDR"]
    request.scheme = environ["wsgi.url_scheme"]
    port = environ.get("SERVER_PORT", "")
    request.server = (environ["SERVER_NAME"], int(port) if port.isdigit() and len(port) <= 5 else None)
    for name in _CACHED_ON_REQUEST:
        request.__dict__.pop(name, None)


def rewrite_environ(environ: dict[str, Any], proxies: TrustedProxies) -> bool:
    """
    If the peer (``REMOTE_ADDR``) is a trusted proxy, take the client's address, scheme and host
    from the forwarding headers. Returns whether the environ changed.
    """
    if not proxies or not proxies.trusts(environ.get("REMOTE_ADDR")):
        return False
    hops = _forwarded_hops(environ.get("HTTP_FORWARDED"))
    if hops is None:
        hops = _x_forwarded_hops(environ)
    if not hops:
        return False
    index = len(hops) - 1
    while index > 0 and proxies.trusts(_address_of(hops[index].get("for"))[0]):
        index -= 1

    original = {key: environ.get(key) for key in ("REMOTE_ADDR", "REMOTE_PORT", "wsgi.url_scheme", "HTTP_HOST")}
    changed = False
    address, port = _address_of(hops[index].get("for"))
    if address is not None:
        environ["REMOTE_ADDR"] = address
        environ["REMOTE_PORT"] = port or ""
        changed = True
    scheme = _nearest(hops, index, "proto")
    if scheme is not None and scheme.lower() in _SCHEMES:
        environ["wsgi.url_scheme"] = scheme.lower()
        changed = True
    host = _nearest(hops, index, "host")
    if host is not None and _HOST.match(host):
        environ["HTTP_HOST"] = host
        changed = True
    forwarded_port = _nearest(hops, index, "port")
    if forwarded_port is not None and _PORT.match(forwarded_port) and 0 < int(forwarded_port) < 65536:
        _set_port(environ, forwarded_port)
        changed = True
    if not changed:
        return False
    if environ.get("HTTP_HOST"):
        environ["SERVER_NAME"], environ["SERVER_PORT"] = _split_host(environ["HTTP_HOST"], environ["wsgi.url_scheme"])
    environ["kyoukai.proxy.orig"] = original
    return True


def _set_port(environ: dict[str, Any], port: str) -> None:
    """Put the forwarded port into ``HTTP_HOST`` (omitted when it is the scheme's default)."""
    host = environ.get("HTTP_HOST")
    if not host:
        environ["SERVER_PORT"] = port
        return
    name, _ = _split_host(host, environ["wsgi.url_scheme"])
    if ":" in name:
        name = f"[{name}]"
    default = "443" if environ["wsgi.url_scheme"] == "https" else "80"
    environ["HTTP_HOST"] = name if port == default else f"{name}:{port}"


def _nearest(hops: Sequence[dict[str, str]], index: int, key: str) -> str | None:
    """The ``key`` of the client's hop, or else of the nearest hop after it that has one."""
    for hop in hops[index:]:
        value = hop.get(key)
        if value is not None:
            return value
    return None


def _x_forwarded_hops(environ: dict[str, Any]) -> list[dict[str, str]]:
    """
    One dict per hop from ``X-Forwarded-For/-Proto/-Host/-Port``; the lists are aligned on the
    right, where the nearest proxy wrote.
    """
    columns = {
        "for": _split_list(environ.get("HTTP_X_FORWARDED_FOR")),
        "proto": _split_list(environ.get("HTTP_X_FORWARDED_PROTO")),
        "host": _split_list(environ.get("HTTP_X_FORWARDED_HOST")),
        "port": _split_list(environ.get("HTTP_X_FORWARDED_PORT")),
    }
    count = len(columns["for"]) or max(len(values) for values in columns.values())
    hops: list[dict[str, str]] = [{} for _ in range(count)]
    for key, values in columns.items():
        for hop, value in zip(reversed(hops), reversed(values), strict=False):
            hop[key] = value
    return hops


def _split_list(value: str | None) -> list[str]:
    if not value:
        return []
    return [item.strip() for item in value.split(",") if item.strip()]


def _forwarded_hops(value: str | None) -> list[dict[str, str]] | None:
    """
    The elements of a ``Forwarded`` header (RFC 7239 section 4), one dict per hop with
    lowercase parameter names; ``None`` if there is no header or it does not parse.
    """
    if not value:
        return None
    hops: list[dict[str, str]] = []
    hop: dict[str, str] = {}
    i, length = 0, len(value)
    while i < length:
        while i < length and value[i] in " \t":
            i += 1
        equals = value.find("=", i)
        if equals < 0:
            return None
        name = value[i:equals].strip().lower()
        if not name or not name.replace("-", "").isalnum():
            return None
        i = equals + 1
        if i < length and value[i] == '"':
            i += 1
            chars: list[str] = []
            while i < length and value[i] != '"':
                if value[i] == "\\" and i + 1 < length:
                    i += 1
                chars.append(value[i])
                i += 1
            if i >= length:
                return None
            i += 1
            item = "".join(chars)
        else:
            end = i
            while end < length and value[end] not in ";,":
                end += 1
            item = value[i:end].strip()
            i = end
        hop[name] = item
        while i < length and value[i] in " \t":
            i += 1
        if i < length and value[i] == ",":
            hops.append(hop)
            hop = {}
        elif i < length and value[i] != ";":
            return None
        i += 1
    if hop:
        hops.append(hop)
    return hops or None


def _address_of(node: str | None) -> tuple[str | None, str | None]:
    """
    The IP address and port of a forwarded node (``192.0.2.1``, ``192.0.2.1:80``, ``2001:db8::1``,
    ``[2001:db8::1]:80``); ``(None, None)`` for ``unknown``, obfuscated names and garbage.
    """
    if not node:
        return None, None
    port: str | None = None
    if node.startswith("["):
        end = node.find("]")
        if end < 0:
            return None, None
        host, rest = node[1:end], node[end + 1 :]
        if rest.startswith(":") and rest[1:].isdigit():
            port = rest[1:]
    elif node.count(":") == 1:
        host, _, port = node.partition(":")
        if not port.isdigit():
            port = None
    else:
        host = node
    ip = _parse_ip(host)
    return (str(ip), port) if ip is not None else (None, None)


def _parse_ip(text: str | None) -> _Address | None:
    if not text:
        return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
