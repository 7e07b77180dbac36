"""Which build of the core's hot modules runs: compiled by mypyc, or the sources.

``pip install`` compiles the modules named in ``COMPILED`` with mypyc (see
``setup.py``): the same Python sources, type-checked and turned into a C
extension, about twice as fast. The build
writes ``exchange/_built.py``, the SHA-256 of each source it compiled.

The extensions are used only when every compiled source is byte for byte the
one they were built from (compiled modules call each other directly, so it is
all of them or none). An edited source, a build without a manifest, or ``SUANLI_PURE=1``
in the environment makes the package import the sources instead, so a stale
extension can never run in place of the code on disk. ``make`` rebuilds when a
compiled source changes.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

PACKAGE_DIR = Path(__file__).resolve().parent
COMPILED = (
    "exchange.auction",
    "exchange.book",
    "exchange.core",
    "exchange.records",
    "exchange.tables",
)


def source_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _source(name: str) -> Path:
    return PACKAGE_DIR / f"{name.rpartition('.')[2]}.py"


def _built() -> dict[str, str]:
    try:
        from exchange._built import SOURCES  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return {}
    sources: dict[str, str] = SOURCES
    return sources


def _has_extension(name: str) -> bool:
    stem = name.rpartition(".")[2]
    return any(
        (PACKAGE_DIR / f"{stem}{suffix}").exists()
        for suffix in importlib.machinery.EXTENSION_SUFFIXES
    )


def _usable(name: str, built: dict[str, str]) -> bool:
    digest = built.get(name)
    return digest is not None and _has_extension(name) and digest == source_digest(_source(name))


class _Sources(importlib.abc.MetaPathFinder):
    """Imports the named modules from their ``.py`` files, ahead of any extension."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.names:
            return None
        return importlib.util.spec_from_file_location(fullname, _source(fullname))


def _choose() -> bool:
    """Use every extension, or none: compiled modules call each other directly, in C.

    True when the extensions are used.
    """
    built = {} if os.environ.get("SUANLI_PURE") else _built()
    if all(_usable(name, built) for name in COMPILED):
        return True
    sys.meta_path.insert(0, _Sources(frozenset(COMPILED)))
    return False


NATIVE = _choose()
"""True when every hot module runs compiled."""


def build() -> str:
    """``"mypyc"`` or ``"source"``: what ``exchange.core`` was imported from."""
    import exchange.core

    suffix = Path(exchange.core.__file__ or "").suffix
    return "source" if suffix == ".py" else "mypyc"
