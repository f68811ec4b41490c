"""
The layout rules of the protocol engines: nothing below ``kyoukai/protocol/`` touches asyncio,
every reach into h2's and hpack's private parts is in ``kyoukai/protocol/h2/compat.py`` (which
checks the h2 version it was written for), and the HTTP/2 shell stays small.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kyoukai.protocol.h2 import compat

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "kyoukai"
#: Private parts of h2 and hpack (and the internals h2 keeps them in) that only compat may name.
PRIVATE_H2 = re.compile(
    r"\b(_receive_frame|_receive_data_frame|_receive_goaway_frame|_handle_data_on_closed_stream"
    r"|_prepare_for_sending|_frame_dispatch_table|_closed_streams|_stream_is_closed_by_\w+|_stream_closed_by"
    r"|_settings|_inbound_flow_control_window_manager|_data_to_send|StreamInputs|ConnectionInputs"
    r"|ConnectionState|HeaderTable|state_machine|hpack\.hpack)\b"
)


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_nothing_under_protocol_imports_asyncio() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in sorted((PACKAGE / "protocol").rglob("*.py"))
        if any(name == "asyncio" or name.startswith("asyncio.") for name in imported_modules(path))
    ]
    assert offenders == []


def test_private_parts_of_h2_only_in_compat() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "protocol" / "h2" / "compat.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if PRIVATE_H2.search(line.split("#", 1)[0]):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == []


def test_the_pattern_finds_what_it_looks_for() -> None:
    assert PRIVATE_H2.search("conn.local_settings._settings[code]")
    assert PRIVATE_H2.search("from h2.stream import StreamInputs")
    assert not PRIVATE_H2.search("conn.local_settings = Settings()")


def test_the_core_imports_and_runs_without_an_event_loop() -> None:
    code = (
        "import asyncio, sys\n"
        "from kyoukai.protocol.h2.connection import H2ServerConnection\n"
        "from kyoukai.settings import ServerSettings\n"
        "core = H2ServerConnection(ServerSettings(), lambda: 0.0)\n"
        "empty_settings = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])\n"
        "core.receive_data(b'PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n' + empty_settings)\n"
        "assert core.data_to_send(), 'no SETTINGS'\n"
        "try:\n"
        "    asyncio.get_running_loop()\n"
        "except RuntimeError:\n"
        "    pass\n"
        "else:\n"
        "    sys.exit('a loop is running')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_the_http2_shell_stays_small() -> None:
    assert len((PACKAGE / "backends" / "http2.py").read_text().splitlines()) < 400


class TestH2Version:
    def test_the_installed_h2_is_in_the_tested_range(self) -> None:
        compat.check_h2_version()

    @pytest.mark.parametrize("version", ["4.0.0", "4.5.0", "5.0.0"])
    def test_outside_the_range_names_both_versions(self, version: str) -> None:
        with pytest.raises(ImportError, match=rf"h2 4\.1\.0 up to .* 4\.5\.0.* h2 {re.escape(version)} is installed"):
            compat.check_h2_version(version)

    def test_setup_allows_exactly_the_tested_range(self) -> None:
        setup = (ROOT / "setup.py").read_text()
        assert '"h2>=4.1,<4.5"' in setup


def test_the_package_ships_its_type_hints() -> None:
    assert (PACKAGE / "py.typed").is_file()
    assert 'package_data={"kyoukai": ["py.typed"]}' in (ROOT / "setup.py").read_text()
