"""Importing the benchmark's files in tests: ``bench/`` is a folder of scripts, not a package."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

#: The benchmark's folder.
BENCH = Path(__file__).resolve().parent.parent / "bench"


def load(name: str, path: Path) -> ModuleType:
    """Import the file ``path`` as the module ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered before running it: dataclasses look their module up by name.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
