"""
Trusted proxies (kyoukai.proxy): Forwarded and X-Forwarded-* rewrite the environ only when the
peer is in ``forwarded_allow_ips``; the app sees the result on both protocols.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from conftest import serve

from kyoukai import Kyoukai
from kyoukai.proxy import TrustedProxies, rewrite_environ
from kyoukai.util import as_json
from kyoukai.wsgi import to_wsgi_environment

TIMEOUT = 10.0


def environ(headers: dict[str, str], peer: str = "127.0.0.1", host: str = "backend:8000") -> dict[str, Any]:
    """The environ of ``GET /`` from ``peer`` over cleartext HTTP/1.1."""
    return to_wsgi_environment(
        {"Host": host, **headers}, "GET", "/", "1.1", server=("10.1.1.1", 8000), peer=(peer, 40000)
    )


def rewritten(headers: dict[str, str], allowed: list[str], peer: str = "127.0.0.1") -> dict[str, Any]:
    env = environ(headers, peer)
    rewrite_environ(env, TrustedProxies(allowed))
    return env


class TestTrust:
    def test_nobody_is_trusted_by_default(self) -> None:
        env = environ({"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"})
        assert rewrite_environ(env, TrustedProxies.from_config({})) is False
        assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("127.0.0.1", "http")
        assert "kyoukai.proxy.orig" not in env

    def test_an_untrusted_peer_is_ignored(self) -> None:
        env = rewritten({"X-Forwarded-For": "203.0.113.9"}, ["10.0.0.0/8"], peer="192.0.2.1")
        assert env["REMOTE_ADDR"] == "192.0.2.1"

    def test_addresses_networks_star_and_mapped_ipv6(self) -> None:
        proxies = TrustedProxies.from_config({"forwarded_allow_ips": "127.0.0.1, 10.0.0.0/8,2001:db8::/32"})
        assert proxies.trusts("127.0.0.1") and proxies.trusts("10.200.3.4") and proxies.trusts("2001:db8::5")
        assert proxies.trusts("::ffff:127.0.0.1")
        assert not proxies.trusts("127.0.0.2") and not proxies.trusts("unknown") and not proxies.trusts("")
        assert TrustedProxies(["*"]).trusts("198.51.100.1")
        assert not TrustedProxies(["*"]).trusts("_hidden")

    @pytest.mark.parametrize("value", [["10.0.0.0/33"], ["localhost"], "127.0.0.1, nope", 42])
    def test_bad_config_names_the_key(self, value: Any) -> None:
        with pytest.raises(ValueError, match="forwarded_allow_ips"):
            TrustedProxies.from_config({"forwarded_allow_ips": value})

    def test_the_app_rejects_a_bad_value_when_it_starts(self) -> None:
        with pytest.raises(ValueError, match="'forwarded_allow_ips': 'proxy.local' is not an IP address"):
            Kyoukai("bad", forwarded_allow_ips=["proxy.local"]).finalize()


class TestXForwarded:
    def test_client_scheme_host_and_port(self) -> None:
        env = rewritten(
            {
                "X-Forwarded-For": "203.0.113.9",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "example.com",
                "X-Forwarded-Port": "8443",
            },
            ["127.0.0.1"],
        )
        assert env["REMOTE_ADDR"] == "203.0.113.9" and env["REMOTE_PORT"] == ""
        assert env["wsgi.url_scheme"] == "https"
        assert (env["HTTP_HOST"], env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.com:8443", "example.com", "8443")
        assert env["kyoukai.proxy.orig"] == {
            "REMOTE_ADDR": "127.0.0.1",
            "REMOTE_PORT": "40000",
            "wsgi.url_scheme": "http",
            "HTTP_HOST": "backend:8000",
        }

    def test_https_on_the_default_port(self) -> None:
        env = rewritten({"X-Forwarded-Proto": "https", "X-Forwarded-Host": "example.com"}, ["127.0.0.1"])
        assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.com", "443")
        env = rewritten(
            {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "example.com:8443", "X-Forwarded-Port": "443"},
            ["127.0.0.1"],
        )
        assert (env["HTTP_HOST"], env["SERVER_PORT"]) == ("example.com", "443")
        env = rewritten({"X-Forwarded-Host": "example.com", "X-Forwarded-Port": "443"}, ["127.0.0.1"])
        assert (env["HTTP_HOST"], env["SERVER_PORT"]) == ("example.com:443", "443")  # http on port 443

    def test_the_chain_stops_at_the_first_untrusted_address(self) -> None:
        chain = {"X-Forwarded-For": "198.51.100.1, 203.0.113.9, 10.0.0.2"}
        # 10.0.0.2 is a trusted proxy; 203.0.113.9 is not: what it says (198.51.100.1) could be forged.
        assert rewritten(chain, ["127.0.0.1", "10.0.0.0/8"])["REMOTE_ADDR"] == "203.0.113.9"
        assert rewritten(chain, ["127.0.0.1"])["REMOTE_ADDR"] == "10.0.0.2"
        assert rewritten(chain, ["*"])["REMOTE_ADDR"] == "198.51.100.1"

    def test_proto_aligned_with_the_chosen_hop(self) -> None:
        headers = {"X-Forwarded-For": "203.0.113.9, 10.0.0.2", "X-Forwarded-Proto": "https, http"}
        assert rewritten(headers, ["127.0.0.1", "10.0.0.0/8"])["wsgi.url_scheme"] == "https"
        assert rewritten(headers, ["127.0.0.1"])["wsgi.url_scheme"] == "http"

    def test_garbage_is_ignored(self) -> None:
        env = rewritten(
            {
                "X-Forwarded-For": "not-an-address",
                "X-Forwarded-Proto": "javascript",
                "X-Forwarded-Host": "evil.example/path",
                "X-Forwarded-Port": "99999",
            },
            ["127.0.0.1"],
        )
        assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"], env["HTTP_HOST"]) == ("127.0.0.1", "http", "backend:8000")
        assert "kyoukai.proxy.orig" not in env

    def test_ipv6_client(self) -> None:
        assert rewritten({"X-Forwarded-For": "2001:db8::7"}, ["127.0.0.1"])["REMOTE_ADDR"] == "2001:db8::7"
        env = rewritten({"X-Forwarded-For": "[2001:db8::7]:5555"}, ["::1"], peer="::1")
        assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("2001:db8::7", "5555")


class TestForwarded:
    def test_rfc7239_elements(self) -> None:
        env = rewritten(
            {"Forwarded": 'for=192.0.2.60;proto=https;host="example.com", for="[2001:db8:cafe::17]:4711"'},
            ["127.0.0.1", "2001:db8:cafe::/48"],
        )
        assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"], env["HTTP_HOST"]) == ("192.0.2.60", "https", "example.com")
        assert env["SERVER_PORT"] == "443"
        env = rewritten({"Forwarded": 'for="[2001:db8:cafe::17]:4711";proto=http'}, ["127.0.0.1"])
        assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("2001:db8:cafe::17", "4711")

    def test_wins_over_x_forwarded(self) -> None:
        headers = {"Forwarded": "for=192.0.2.60", "X-Forwarded-For": "203.0.113.9"}
        assert rewritten(headers, ["127.0.0.1"])["REMOTE_ADDR"] == "192.0.2.60"

    def test_unparsable_falls_back_to_x_forwarded(self) -> None:
        headers = {"Forwarded": 'for="192.0.2.60', "X-Forwarded-For": "203.0.113.9"}
        assert rewritten(headers, ["127.0.0.1"])["REMOTE_ADDR"] == "203.0.113.9"

    def test_obfuscated_client_keeps_the_peer_address(self) -> None:
        env = rewritten({"Forwarded": "for=unknown;proto=https"}, ["127.0.0.1"])
        assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("127.0.0.1", "https")
        # Nothing left of an unidentified hop is believed: it is not a trusted proxy.
        env = rewritten({"Forwarded": "for=192.0.2.1;proto=https, for=_hidden"}, ["127.0.0.1"])
        assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("127.0.0.1", "http")


def who_app() -> Kyoukai:
    """An app that shows what it knows of the client (a new one per server: config is per app)."""
    app = Kyoukai("who")

    @app.route("/who")
    async def who(ctx):
        request = ctx.request
        return as_json({"remote_addr": request.remote_addr, "scheme": request.scheme, "url": request.url})

    return app


HEADERS = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "example.com"}


class TestInTheApp:
    @pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
    def test_trusted_proxy(self, http2: bool) -> None:
        with serve(who_app(), http2=True, forwarded_allow_ips=["127.0.0.1"]) as server:
            with httpx.Client(http1=not http2, http2=http2, timeout=TIMEOUT) as client:
                response = client.get(server.url("/who"), headers=HEADERS)
        assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
        assert response.json() == {"remote_addr": "203.0.113.9", "scheme": "https", "url": "https://example.com/who"}

    @pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
    def test_headers_ignored_by_default(self, http2: bool) -> None:
        with serve(who_app(), http2=True) as server:
            with httpx.Client(http1=not http2, http2=http2, timeout=TIMEOUT) as client:
                response = client.get(server.url("/who"), headers=HEADERS)
        url = f"http://127.0.0.1:{server.port}/who"
        assert response.json() == {"remote_addr": "127.0.0.1", "scheme": "http", "url": url}
