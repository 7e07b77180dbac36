"""The compiled build of the hot modules is used only when it matches the sources."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from exchange import native

ROOT = Path(__file__).resolve().parent.parent


# An editable install's finder would resolve exchange.* to the checkout: drop it.
PROBE = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f)]
import exchange.native as n
print(n.build())
"""


def build_in(root: Path, **env: str) -> str:
    """What ``exchange.core`` is imported from with ``root`` first on the path."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.strip()


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    """The exchange package with its build (extensions and manifest), copied."""
    shutil.copytree(
        ROOT / "exchange", tmp_path / "exchange", ignore=shutil.ignore_patterns("__pycache__")
    )
    for shared in ROOT.glob("suanli_core__mypyc*"):
        shutil.copy2(shared, tmp_path)
    return tmp_path


def test_the_makefile_rebuilds_on_a_change_to_any_compiled_module() -> None:
    hot = re.search(r"^HOT := (.*?)(?:#.*)?$", (ROOT / "Makefile").read_text(), re.M)
    assert hot is not None
    listed = {path.removesuffix(".py").replace("/", ".") for path in hot.group(1).split()}
    assert listed == set(native.COMPILED)


def test_an_edited_source_is_imported_instead_of_its_stale_extension(package_copy: Path) -> None:
    source = package_copy / "exchange" / "auction.py"
    source.write_text(source.read_text() + "\n# edited after the build\n")
    assert build_in(package_copy) == "source"


def test_suanli_pure_imports_the_sources(package_copy: Path) -> None:
    assert build_in(package_copy, SUANLI_PURE="1") == "source"


def test_a_build_that_matches_its_sources_is_used(package_copy: Path) -> None:
    if not native.NATIVE:
        pytest.skip("this checkout runs the sources (no current mypyc build)")
    assert build_in(package_copy) == "mypyc"


def test_without_a_manifest_the_sources_are_used(package_copy: Path) -> None:
    (package_copy / "exchange" / "_built.py").unlink(missing_ok=True)
    assert build_in(package_copy) == "source"
