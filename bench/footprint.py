"""
Where the memory at rest goes: the resident size of a fresh interpreter after each group of
imports, for Kyoukai's stack and for Hypercorn's, each step measured in a new process.

    python bench/footprint.py

Every step imports the groups before it too, so each row is what that group adds on top of
the ones above it. Bytecode is compiled first (as ``bench/run.py`` does), so no row pays for
compiling source.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import deps  # noqa: E402

#: (label, import statement), in order; each step includes the ones before it.
COMMON = [
    ("interpreter", "pass"),
    ("asyncio, ssl, logging.config", "import asyncio, ssl, logging.config"),
    ("h2", "import h2.connection"),
]
STACKS = {
    "kyoukai": [
        ("werkzeug (its __init__ also imports its dev server and test client)", "import werkzeug.wrappers"),
        ("werkzeug.routing", "import werkzeug.routing"),
        ("asphalt.core", "import asphalt.core"),
        ("kyoukai and its HTTP/2 backend", "import kyoukai.backends.http2"),
        ("httptools and the HTTP/1.1 backend", "import kyoukai.backends.httptools_"),
    ],
    "hypercorn": [
        ("hypercorn (config, asyncio worker, h11, h2, wsproto)", "import hypercorn.asyncio, hypercorn.config"),
        ("hypercorn command line", "import hypercorn.__main__"),
    ],
}

_PROBE = "import re\n{imports}\nprint(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read()).group(1))"


def resident_kib(statements: list[str]) -> int:
    code = _PROBE.format(imports="\n".join(statements))
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return int(out)


def main() -> None:
    deps.compile_bytecode()
    for stack, steps in STACKS.items():
        print(f"\n{stack}:")
        statements: list[str] = []
        previous = 0
        for label, statement in COMMON + steps:
            statements.append(statement)
            # The median of three fresh processes, against page-level noise.
            kib = sorted(resident_kib(statements) for _ in range(3))[1]
            print(f"  {kib / 1024:6.1f} MiB  {'+' if previous else ' '}{(kib - previous) / 1024:5.1f}  {label}")
            previous = kib


if __name__ == "__main__":
    main()
