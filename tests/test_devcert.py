"""The development certificate: ``python -m kyoukai.devcert`` and serving HTTP/2 over TLS with it."""

from __future__ import annotations

import ipaddress
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import serve
from cryptography import x509
from ruamel.yaml import YAML

from kyoukai import Kyoukai, devcert


def make_app() -> Kyoukai:
    app = Kyoukai("devcert")

    @app.route("/")
    async def index(ctx):
        return f"served over {ctx.environ['SERVER_PROTOCOL']} {ctx.environ['wsgi.url_scheme']}"

    return app


class TestGenerate:
    def test_names_and_usage(self) -> None:
        cert_pem, key_pem = devcert.generate(days=10)
        cert = x509.load_pem_x509_certificate(cert_pem)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName) == ["localhost"]
        assert names.get_values_for_type(x509.IPAddress) == [
            ipaddress.ip_address("127.0.0.1"),
            ipaddress.ip_address("::1"),
        ]
        assert cert.issuer == cert.subject
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert 10 <= lifetime.days <= 11
        assert b"PRIVATE KEY" in key_pem

    def test_write_refuses_to_overwrite(self, tmp_path: Path) -> None:
        first = devcert.write(tmp_path)
        before = first.certfile.read_bytes()
        with pytest.raises(FileExistsError, match="--force"):
            devcert.write(tmp_path)
        assert first.certfile.read_bytes() == before
        devcert.write(tmp_path, overwrite=True)
        assert first.certfile.read_bytes() != before
        assert first.keyfile.stat().st_mode & 0o077 == 0, "the key must be readable by its owner only"

    def test_command_line_prints_the_config_block(self, tmp_path: Path) -> None:
        folder = tmp_path / "certs"
        result = subprocess.run(
            [sys.executable, "-m", "kyoukai.devcert", "--dir", str(folder)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        block = result.stdout[result.stdout.index("ssl:") :]
        config = YAML(typ="safe").load(block)
        assert config == {
            "ssl": {
                "enabled": True,
                "ssl_certfile": str(folder / "cert.pem"),
                "ssl_keyfile": str(folder / "key.pem"),
            }
        }
        again = subprocess.run(
            [sys.executable, "-m", "kyoukai.devcert", "--dir", str(folder)], capture_output=True, text=True, timeout=60
        )
        assert again.returncode == 1
        assert "exists" in again.stderr


class TestServe:
    def test_http2_over_tls_with_the_generated_certificate(self, tmp_path: Path) -> None:
        paths = devcert.write(tmp_path)
        # The certificate and key load into a server context as they are.
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(paths.certfile, paths.keyfile)
        client_context = ssl.create_default_context(cafile=str(paths.certfile))
        ssl_config = {"enabled": True, "ssl_certfile": str(paths.certfile), "ssl_keyfile": str(paths.keyfile)}
        with serve(make_app(), http2=True, ssl=ssl_config) as server:
            for host in ("localhost", "127.0.0.1"):
                with httpx.Client(http2=True, verify=client_context) as client:
                    response = client.get(f"https://{host}:{server.port}/")
                assert response.http_version == "HTTP/2"
                assert response.status_code == 200
                assert response.text == "served over HTTP/2 https"

    def test_an_untrusted_client_refuses_it(self, tmp_path: Path) -> None:
        paths = devcert.write(tmp_path)
        ssl_config = {"enabled": True, "ssl_certfile": str(paths.certfile), "ssl_keyfile": str(paths.keyfile)}
        with serve(make_app(), http2=True, ssl=ssl_config) as server:
            with httpx.Client(http2=True, verify=ssl.create_default_context()) as client:
                with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                    client.get(f"https://localhost:{server.port}/")
