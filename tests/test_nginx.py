"""
The nginx recipe of examples/deploy: the file for the installed nginx (nginx.conf from 1.25.1 on,
nginx-1.22.conf before), with this test's ports and certificate, in front of ``asphalt run
config.yml`` serving examples/deploy/app.py. nginx speaks TLS and HTTP/2 to the client and
HTTP/1.1 to Kyoukai, which trusts it (``forwarded_allow_ips``) for the client's address.

The client connects from 127.0.0.2 and nginx from 127.0.0.1, so Kyoukai can tell the real
client from the proxy. tests/run.sh installs Debian's nginx.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from test_examples import EXAMPLES, START_DEADLINE, RunningExample, asphalt_command, free_port

DEPLOY = EXAMPLES / "deploy"
DOCS = Path(__file__).resolve().parent.parent / "docs"
#: Debian installs it in /usr/sbin, which a user's PATH may lack.
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
CLIENT = "127.0.0.2"
TIMEOUT = 10.0
#: The version that brought the ``http2`` directive (and deprecated ``listen ... http2``).
HTTP2_DIRECTIVE = (1, 25, 1)

#: A line of Kyoukai's default access log (kyoukai.accesslog.DEFAULT_FORMAT).
ACCESS_LINE = re.compile(
    r"(?P<client>\S+) - (?P<user>\S+) \[\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\] "
    r'"(?P<method>[A-Z]+) (?P<path>\S+) (?P<protocol>HTTP/[\d.]+)" (?P<status>\d{3}) (?:\d+|-) \d+\.\d{6}'
)


def nginx() -> str:
    if NGINX is None:
        pytest.fail("nginx is not installed: tests/run.sh installs it (Debian: apt-get install nginx)")
    return NGINX


def nginx_version() -> tuple[int, ...]:
    """The installed nginx's version (``nginx -v`` says ``nginx version: nginx/1.22.1``)."""
    result = subprocess.run([nginx(), "-v"], capture_output=True, text=True, timeout=TIMEOUT)
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", result.stderr + result.stdout)
    assert match is not None, result.stderr
    return tuple(int(part) for part in match.groups())


def recipe_for(version: tuple[int, ...]) -> str:
    """The file of examples/deploy for that nginx version."""
    return "nginx.conf" if version >= HTTP2_DIRECTIVE else "nginx-1.22.conf"


def nginx_config(recipe: str, folder: Path, front: int, backend: int, tls_files: dict[str, str]) -> Path:
    """A whole nginx.conf in ``folder`` holding ``recipe`` with this test's ports, certificate and files."""
    server = (DEPLOY / recipe).read_text()
    replacements = {
        "listen 443 ": f"listen 127.0.0.1:{front} ",
        "server 127.0.0.1:8000;": f"server 127.0.0.1:{backend};",
        "/etc/letsencrypt/live/example.com/fullchain.pem": tls_files["cert"],
        "/etc/letsencrypt/live/example.com/privkey.pem": tls_files["key"],
    }
    for old, new in replacements.items():
        assert server.count(old) == 1, f"{recipe} should name {old!r} once"
        server = server.replace(old, new)
    temp = "\n".join(
        f"    {kind}_temp_path {folder / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    config = folder / "nginx.conf"
    config.write_text(
        f"daemon off;\npid {folder / 'nginx.pid'};\nerror_log {folder / 'error.log'} info;\n"
        f"events {{\n    worker_connections 64;\n}}\n"
        f"http {{\n    access_log {folder / 'access.log'};\n{temp}\n{server}\n}}\n"
    )
    return config


def nginx_test(config: Path) -> subprocess.CompletedProcess:
    """``nginx -t`` of ``config``."""
    command = [nginx(), "-t", "-p", str(config.parent), "-c", str(config), "-e", str(config.parent / "error.log")]
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT)


def wait_listening(process: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + START_DEADLINE
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"nginx did not listen within {START_DEADLINE}s:\n{log.read_text()}")
        try:
            code = process.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            continue
        pytest.fail(f"nginx exited with {code}:\n{log.read_text()}")


@dataclass
class Deployment:
    front: int
    kyoukai: RunningExample
    recipe: str

    def url(self, path: str = "/") -> str:
        return f"https://127.0.0.1:{self.front}{path}"


@pytest.fixture
def deployment(tmp_path: Path, tls_files: dict[str, str]) -> Iterator[Deployment]:
    backend, front = free_port(), free_port()
    kyoukai = RunningExample(
        DEPLOY,
        asphalt_command() + ["run", "config.yml", "--set", f"component.port={backend}"],
        tmp_path / "kyoukai.log",
    )
    recipe = recipe_for(nginx_version())
    folder = tmp_path / "nginx"
    folder.mkdir()
    config = nginx_config(recipe, folder, front, backend, tls_files)
    log = tmp_path / "nginx.log"
    process: subprocess.Popen | None = None
    try:
        kyoukai.wait_for_port(backend)
        with log.open("wb") as out:
            command = [nginx(), "-p", str(folder), "-c", str(config), "-e", str(folder / "error.log")]
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        wait_listening(process, front, folder / "error.log")
        yield Deployment(front, kyoukai, recipe)
    finally:
        if process is not None:
            process.send_signal(signal.SIGQUIT)  # nginx's graceful stop
            process.wait(TIMEOUT)
        output = kyoukai.stop()
        assert kyoukai.process.returncode == 0, output
        assert "Traceback" not in output, output


def test_the_recipe_for_this_nginx_is_valid(tmp_path: Path, tls_files: dict[str, str]) -> None:
    """The file for the installed version passes ``nginx -t``; the other one, where this nginx reads it."""
    version = nginx_version()
    chosen = recipe_for(version)
    checked = nginx_test(nginx_config(chosen, tmp_path, free_port(), free_port(), tls_files))
    assert checked.returncode == 0, checked.stderr
    other_folder = tmp_path / "other"
    other_folder.mkdir()
    other = "nginx-1.22.conf" if chosen == "nginx.conf" else "nginx.conf"
    result = nginx_test(nginx_config(other, other_folder, free_port(), free_port(), tls_files))
    if version >= HTTP2_DIRECTIVE:
        # Newer nginx still reads the old form, with a warning.
        assert result.returncode == 0, result.stderr
    else:
        assert chosen == "nginx-1.22.conf"
        assert result.returncode != 0 and 'unknown directive "http2"' in result.stderr, result.stderr


def test_curl_gets_http2_through_nginx(deployment: Deployment, tls_files: dict[str, str]) -> None:
    result = subprocess.run(
        ["curl", "--silent", "--show-error", "--http2", "--cacert", tls_files["ca"], "--interface", CLIENT,
         "--max-time", str(TIMEOUT), "--write-out", "\n%{http_version}", deployment.url()],
        capture_output=True, text=True, timeout=TIMEOUT + 5,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"Hello {CLIENT}, you came over https.\n\n2"


def test_the_client_address_and_scheme_reach_the_app(deployment: Deployment, tls_files: dict[str, str]) -> None:
    context = ssl.create_default_context(cafile=tls_files["ca"])
    transport = httpx.HTTPTransport(verify=context, local_address=CLIENT, http2=True)
    with httpx.Client(transport=transport, http2=True, timeout=TIMEOUT) as client:
        answers = [client.get(deployment.url()) for _ in range(3)]
        # A client that claims to be someone else: nginx adds the address it saw after the
        # claim, and Kyoukai takes the nearest address that is not a trusted proxy.
        spoofed = client.get(deployment.url(), headers={"X-Forwarded-For": "6.6.6.6", "Forwarded": "for=6.6.6.6"})
    for response in [*answers, spoofed]:
        assert response.http_version == "HTTP/2"
        assert response.text == f"Hello {CLIENT}, you came over https.\n"
    # Kyoukai's access log names the client; nginx reached it over HTTP/1.1, on kept-alive connections.
    lines = [m for m in map(ACCESS_LINE.search, deployment.kyoukai.output().splitlines()) if m is not None]
    assert [(m["client"], m["path"], m["protocol"], m["status"]) for m in lines] == [
        (CLIENT, "/", "HTTP/1.1", "200")
    ] * 4
    assert "Kyoukai serving HTTP/1.1 on http://127.0.0.1" in deployment.kyoukai.output()


def test_the_documented_access_log_lines_have_the_real_format() -> None:
    """The sample lines of docs/asphalt.rst and docs/deploying.rst are lines Kyoukai writes."""
    for page in ("asphalt.rst", "deploying.rst"):
        text = (DOCS / page).read_text()
        samples = [line.strip() for line in text.splitlines() if re.match(r"\s+\d+\.\d+\.\d+\.\d+ - - \[", line)]
        assert samples, f"docs/{page} shows no access log line"
        for sample in samples:
            assert ACCESS_LINE.fullmatch(sample), f"docs/{page}: {sample!r} is not in Kyoukai's access log format"
