"""Sphinx configuration of psremote's documentation (`make docs`).

Pages are MyST Markdown. The Python reference comes from the docstrings of the installed
package (autodoc imports ``psremote`` from the project's virtualenv, so ``make python-package``
runs first); the C reference from ``include/psremote.h`` and the CLI reference from the
argparse parser, both through our own extensions in ``_ext/``.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))

import psremote  # noqa: E402  (after the path set-up; the version comes from the package)

project = "psremote"
author = "the psremote authors"
copyright = "the psremote authors"
release = psremote.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "psremote_c_header",
    "psremote_cli",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
# The sample runner's code, its guide for authors and the build output are not pages.
exclude_patterns = ["_build", "tests", "README.md", ".pytest_cache"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# Warnings are errors (make docs passes -W -n): every reference must resolve.
nitpicky = True
# The C standard's types are not ours to document; nor are the third-party types the
# Python signatures name (no intersphinx: the build reaches no network).
nitpick_ignore = [
    ("c:identifier", name)
    for name in ("size_t", "int32_t", "uint32_t", "int64_t", "uint64_t", "uint8_t", "uint16_t", "bool", "va_list")
]
nitpick_ignore_regex = [
    # psremote's private modules and names (a leading underscore) are not documented; the
    # public classes built on them are, with the inherited members.
    (r"py:.*", r"psremote\.(\w+\.)*_\w+.*"),
    # Python's own functions named in docstrings (no intersphinx: no network in the build).
    ("py:func", r"(input|getpass\.getpass|print|open|repr|str|len|isinstance)"),
    # Types from outside psremote that annotations name (the standard library's are fine
    # to leave unlinked: the build does not fetch Python's inventory).
    ("py:class", r"(typing|collections\.abc|os|pathlib|datetime|uuid|decimal|enum|logging|asyncio|concurrent\.futures|types|_io|io|argparse)\..*"),
    ("py:class", r"(pandas|numpy)\..*"),
    ("py:class", r"(Any|Optional|Union|Callable|Iterator|AsyncIterator|Iterable|Mapping|Sequence|Dict|List|Tuple|Set|Type|TypeVar|Awaitable|Literal|IO|NoneType|T|ellipsis)"),
    ("py:class", r"(int|str|bytes|float|bool|dict|list|tuple|set|object|bytearray|memoryview|complex|frozenset|type|BaseException|Exception)"),
    ("py:class", r"(TimeoutError|ConnectionError|OSError|ValueError|RuntimeError|KeyError|FileNotFoundError|PermissionError|IsADirectoryError|NotADirectoryError|IndexError)"),
    ("py:class", r"(PathLike|Path|datetime|timedelta|UUID|Decimal|Enum|IntEnum|Logger|LogRecord|Handler|TextIO|BinaryIO)"),
]
intersphinx_mapping: dict = {}

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
# Base classes are shown for the exceptions (their hierarchy is API), not for classes whose
# bases are private helpers or object.
autodoc_default_options = {"members": True}
# Private helpers the public classes inherit from are documented through those classes.
autodoc_inherit_docstrings = True

html_theme = "alabaster"
html_title = f"psremote {release}"
html_theme_options = {
    "description": "PowerShell Remoting for Python and C, backed by a Rust core",
    "fixed_sidebar": True,
    "show_powered_by": False,
}
html_static_path: list = []
html_show_sourcelink = False

# Where the C extension finds the header (relative to this file).
psremote_c_header = str(ROOT / "include" / "psremote.h")
