"""Install what the benchmark needs, only when it is missing: a no-op on a prepared machine."""

from __future__ import annotations

import compileall
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: Import name -> pip requirement.
PYTHON_PACKAGES = {"hypercorn": "hypercorn", "matplotlib": "matplotlib", "cryptography": "cryptography"}


def ensure_dependencies(*, uvloop: bool, uvicorn: bool = False, starlette: bool = False) -> None:
    """
    pip-install the missing Python packages (and Kyoukai itself, editable, from this checkout),
    and apt-get ``nghttp2-client`` when ``h2load`` is not on ``PATH``. ``uvicorn`` and
    ``starlette``: those are asked for too (a uvicorn server, the Starlette app).
    """
    wanted = dict(PYTHON_PACKAGES)
    if uvloop:
        wanted["uvloop"] = "uvloop"
    if uvicorn:
        wanted.update(uvicorn="uvicorn", httptools="httptools")
    if starlette:
        wanted["starlette"] = "starlette"
    missing = [req for name, req in wanted.items() if importlib.util.find_spec(name) is None]
    install_kyoukai = importlib.util.find_spec("kyoukai") is None
    if install_kyoukai:
        missing += ["-e", str(REPO)]
    if missing:
        print(f"installing {' '.join(missing)} with pip", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *missing], check=True)
        importlib.invalidate_caches()
    if install_kyoukai:
        # An editable install takes effect at the next interpreter start (its .pth file); the
        # servers are new processes, but this one imports Kyoukai too (the TLS certificate).
        sys.path.insert(0, str(REPO))
    if shutil.which("h2load") is None:
        install_h2load()
    compile_bytecode()


def compile_bytecode() -> None:
    """
    Write the ``.pyc`` files of Kyoukai and of the bench apps, as ``pip install`` does for every
    package it installs (Hypercorn's included). An editable checkout has none until Python
    writes them, and never under ``PYTHONDONTWRITEBYTECODE``: every server start would then
    compile Kyoukai from source, which costs about 2 MiB of its peak RSS.
    """
    for folder in (REPO / "kyoukai", REPO / "bench" / "apps"):
        if not compileall.compile_dir(folder, quiet=1):
            sys.exit(f"could not compile {folder}")


def install_h2load() -> None:
    """``apt-get install nghttp2-client``, as root or through sudo."""
    if shutil.which("apt-get") is None:
        sys.exit("h2load is not installed and there is no apt-get: install nghttp2 (it provides h2load) by hand")
    prefix = [] if os.geteuid() == 0 else ["sudo"]
    if prefix and shutil.which("sudo") is None:
        sys.exit("h2load is not installed: run `apt-get install nghttp2-client` as root")
    print("installing nghttp2-client (h2load) with apt-get", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run([*prefix, "apt-get", "update", "-q"], check=True, env=env)
    subprocess.run([*prefix, "apt-get", "install", "-y", "-q", "nghttp2-client"], check=True, env=env)
