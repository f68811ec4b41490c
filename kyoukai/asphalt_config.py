"""Reading an asphalt configuration file as ``asphalt run`` does (for ``kyoukai run --config`` and gunicorn)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from asphalt.core.cli import binary_file_constructor, env_constructor, text_file_constructor
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

#: The top-level keys :func:`asphalt.core.run_application` takes besides ``component``.
RUNNER_KEYS = ("logging", "event_loop_policy", "max_threads", "start_timeout")


class ConfigError(ValueError):
    """A configuration file that cannot be run; the message starts with its path."""


def load_asphalt_config(path: str) -> dict[str, Any]:
    """
    Read an asphalt configuration file as ``asphalt run`` does (the ``!Env``, ``!TextFile`` and
    ``!BinaryFile`` tags; a ``services`` section, picked by ``ASPHALT_SERVICE`` or its only or
    ``default`` service) and return the :func:`~asphalt.core.run_application` keyword arguments.

    :raises ConfigError: naming the file and what is wrong with it.
    """
    yaml = YAML(typ="safe")
    yaml.constructor.add_constructor("!Env", env_constructor)
    yaml.constructor.add_constructor("!TextFile", text_file_constructor)
    yaml.constructor.add_constructor("!BinaryFile", binary_file_constructor)
    try:
        config = yaml.load(Path(path))
    except (OSError, YAMLError) as e:
        raise ConfigError(f"{path}: {e}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: the document root must be a mapping")
    services = dict(config.pop("services", None) or {})
    if "component" in config:
        services.setdefault("default", {"component": config.pop("component")})
    name = os.getenv("ASPHALT_SERVICE") or (next(iter(services)) if len(services) == 1 else "default")
    if name not in services:
        raise ConfigError(f"{path}: no service {name!r} and no top-level 'component'")
    merged = {**config, **services[name]}
    unknown = sorted(set(merged) - {"component", *RUNNER_KEYS})
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {', '.join(unknown)}")
    if not isinstance(merged.get("component"), dict):
        raise ConfigError(f"{path}: the service {name!r} has no 'component' mapping")
    return merged
