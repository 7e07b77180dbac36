"""Compile the core's hot modules with mypyc; everything else is in pyproject.toml.

``SUANLI_PURE=1 pip install ...`` skips the compiler and installs the sources
alone. ``exchange/native.py`` explains how the package picks a build at import.
"""

import hashlib
import os
from pathlib import Path

from setuptools import setup

HOT = ("exchange/auction.py", "exchange/book.py", "exchange/core.py")
MANIFEST = Path("exchange/_built.py")


def _module(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def _manifest() -> str:
    digests = {_module(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in HOT}
    return f'"""Written by setup.py: the sources mypyc compiled."""\n\nSOURCES = {digests!r}\n'


if os.environ.get("SUANLI_PURE"):
    MANIFEST.unlink(missing_ok=True)
    setup()
else:
    from mypyc.build import mypycify

    extensions = mypycify(list(HOT), opt_level="3", group_name="suanli_core")
    MANIFEST.write_text(_manifest())
    setup(ext_modules=extensions)
