"""Packaging for Kyoukai."""

from pathlib import Path

from setuptools import find_packages, setup

version = {}
exec(Path(__file__).with_name("kyoukai").joinpath("version.py").read_text(), version)

setup(
    name="Kyoukai",
    version=version["__version__"],
    description="An asyncio web framework on asphalt, werkzeug and h2, serving HTTP/1.1 and HTTP/2.",
    long_description=Path(__file__).with_name("README.rst").read_text(),
    long_description_content_type="text/x-rst",
    license="MIT",
    packages=find_packages(include=["kyoukai", "kyoukai.*"]),
    python_requires=">=3.11",
    install_requires=[
        "asphalt>=4.12,<5",
        "werkzeug>=3.1,<3.2",
        "h2>=4.1,<4.5",
        "httptools>=0.6,<1",
        # WebSocket frames, over HTTP/1.1 and HTTP/2 (RFC 8441).
        "wsproto>=1.2,<2",
        # Only for python -m kyoukai.devcert (the development certificate); never imported otherwise.
        "cryptography>=42",
    ],
    extras_require={
        "uvloop": ["uvloop>=0.19"],
        # kyoukai run --reload watches the app's folder with watchfiles.
        "reload": ["watchfiles>=0.21"],
        # kyoukai.metrics_prometheus: the metrics for Prometheus, across gunicorn workers too.
        "prometheus": ["prometheus_client>=0.20"],
        # kyoukai.backends.gunicorn (--http-protocols needs gunicorn 25 or newer).
        "gunicorn": ["gunicorn>=25"],
        # The API reference imports kyoukai.backends.gunicorn.
        "docs": ["sphinx>=7", "gunicorn>=25"],
        # The ASGI tests: real ASGI apps on Kyoukai, and Kyoukai apps on other ASGI servers
        # (Hypercorn needs h2 4.3 or newer, so the oldest-h2 CI job goes without these).
        "interop": [
            "starlette>=0.40",
            "fastapi>=0.110",
            "quart>=0.19",
            "uvicorn>=0.30",
            "hypercorn>=0.17",
        ],
        "test": [
            "pytest>=8",
            "pytest-asyncio>=0.24",
            "pytest-timeout>=2.3",
            "httpx[http2]>=0.27",
            "trustme>=1.1",
            "hyperframe>=6",
            # Property-based tests of the HTTP/2 core (tests/test_h2_core_properties.py).
            "hypothesis>=6.100",
            "gunicorn>=25",
            # The deployment example runs with asphalt run --loop uvloop.
            "uvloop>=0.19",
            "ruff>=0.6",
            # tests/test_lint.py type-checks the package (config in pyproject.toml).
            "mypy>=1.11",
            # CI builds the docs (tests/test_docs.py).
            "sphinx>=7",
            "watchfiles>=0.21",
            "prometheus_client>=0.20",
            # The recipes of the docs: templates and signed-cookie sessions.
            "jinja2>=3.1",
            "itsdangerous>=2.1",
            # A real WebSocket client for the WebSocket tests.
            "websockets>=13",
        ],
    },
    package_data={"kyoukai": ["py.typed"]},
    entry_points={
        "console_scripts": ["kyoukai = kyoukai.cli:main"],
        "asphalt.components": [
            "kyoukai = kyoukai.asphalt:KyoukaiComponent",
            "kyoukai_h2 = kyoukai.backends.http2:H2KyoukaiComponent",
        ]
    },
    classifiers=[
        "Framework :: AsyncIO",
        "Programming Language :: Python :: 3",
        "Topic :: Internet :: WWW/HTTP :: HTTP Servers",
    ],
)
