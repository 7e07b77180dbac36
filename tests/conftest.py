"""Fixtures for the whole suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    """Commands run in-process (the CLI) configure structlog for the process;
    put the defaults back so no test sees another test's log level or sink."""
    yield
    structlog.reset_defaults()
