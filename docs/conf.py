"""Sphinx configuration of the Kyoukai documentation (``sphinx-build -W -b html docs docs/_build/html``)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kyoukai.version import __version__  # noqa: E402

project = "Kyoukai"
author = "The Kyoukai developers"
copyright = "2016-2026, the Kyoukai developers"
version = release = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
]

# The docs build with no network: intersphinx is loaded but given no inventories to fetch.
intersphinx_mapping: dict = {}
intersphinx_disabled_reftypes = ["*"]

autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "description"
autodoc_class_signature = "separated"

exclude_patterns = ["_build"]
templates_path: list = []
highlight_language = "python3"
pygments_style = "sphinx"

html_theme = "alabaster"
html_title = f"Kyoukai {release}"
html_theme_options = {
    "description": "asyncio web framework: HTTP/1.1 and HTTP/2 on asphalt, werkzeug and h2",
    "fixed_sidebar": True,
    "page_width": "1100px",
}
html_static_path: list = []


def _trim_blank_lines(app, doctree) -> None:
    """Drop the blank lines that literalinclude keeps around a marked section of an example."""
    from docutils import nodes

    for block in doctree.findall(nodes.literal_block):
        if block.rawsource != block.astext():
            continue
        trimmed = block.rawsource.strip("\n")
        if trimmed != block.rawsource:
            block.rawsource = trimmed
            block.children = [nodes.Text(trimmed)]


def setup(app) -> dict:
    app.connect("doctree-read", _trim_blank_lines)
    return {"parallel_read_safe": True}
