"""Sphinx configuration of the astrotf documentation.

Build:  python -m sphinx -W --keep-going -b html docs docs/_build/html
(``pip install -e ".[docs]"``). The benchmark pages are rendered from the JSON the benchmarks
write (``docs/make_bench_pages.py``) at the start of every build.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))
sys.path.insert(0, str(DOCS))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import make_bench_pages  # noqa: E402

import astrotf  # noqa: E402

make_bench_pages.main()

project = "astrotf"
author = "the astrotf developers"
copyright = "the astrotf developers, BSD-3-Clause"  # noqa: A001
release = version = astrotf.__version__

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx_click",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
# The benchmarks' own outputs (tables, JSON, plots) are inputs of make_bench_pages, not pages.
exclude_patterns = ["_build", "bench-*.md", "bench-*/**", "make_bench_pages.py"]

myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "none"  # numpydoc's Parameters sections carry the types
autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_inherit_docstrings = False  # Keras' own docstrings (from_config, call, ...) are not ours to render
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
# numpydoc turns a References section into citations; most cite a paper without an inline [1]_ mark.
suppress_warnings = ["ref.citation"]

smartquotes = False  # option names such as --restore stay as typed

html_theme = "furo"
html_title = f"astrotf {release}"


def _plain_help(app, ctx, lines):
    """Option help is plain text, not reStructuredText: ``|x|`` and ``*`` are meant literally."""
    for i, line in enumerate(lines):
        if not line.lstrip().startswith((".. ", ":")):
            lines[i] = line.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*")


def setup(app):
    app.connect("sphinx-click-process-options", _plain_help)
    app.connect("sphinx-click-process-arguments", _plain_help)
    app.connect("sphinx-click-process-description", _plain_help)
