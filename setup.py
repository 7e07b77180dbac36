"""Compile the core's hot modules with mypyc; everything else is in pyproject.toml.

``SUANLI_PURE=1 pip install ...`` skips the compiler and installs the sources
alone. ``exchange/native.py`` explains how the package picks a build at import.
"""

import os
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))  # the build backend does not put the project on the path

from exchange.native import COMPILED, source_digest  # noqa: E402

SOURCES = {name: ROOT / (name.replace(".", "/") + ".py") for name in COMPILED}
MANIFEST = ROOT / "exchange" / "_built.py"


def _manifest() -> str:
    digests = {name: source_digest(path) for name, path in SOURCES.items()}
    return f'"""Written by setup.py: the sources mypyc compiled."""\n\nSOURCES = {digests!r}\n'


if os.environ.get("SUANLI_PURE"):
    MANIFEST.unlink(missing_ok=True)
    setup()
else:
    from mypyc.build import mypycify

    paths = [str(path.relative_to(ROOT)) for path in SOURCES.values()]
    extensions = mypycify(paths, opt_level="3", group_name="suanli_core")
    MANIFEST.write_text(_manifest())
    setup(ext_modules=extensions)
