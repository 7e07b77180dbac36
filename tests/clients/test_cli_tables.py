"""Listings print every id and number whole, however narrow the terminal."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from clients.cli_tables import Listing

ID = "ASCEND910B-SHANGHAI-STATE-W2"
CELLS = ("123456", "3f1c2a9e-5b7d-4e21-9a0b", ID, "BUY", "18.10", "640", "FILL/PARTIALLY_FILLED")


def _listing() -> Listing:
    listing = Listing(
        "execution reports",
        ("order", "client id", "instrument", "side", "price", "qty", "status"),
        numbers=("order", "price", "qty"),
    )
    listing.add_row(*CELLS)
    listing.add_row(*CELLS[:4], "9.05", "8", "NEW/NEW")
    return listing


def _shown(width: int, terminal: bool) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=terminal, color_system=None)
    _listing().show(console)
    return out.getvalue()


def test_a_wide_table_on_a_terminal_that_fits_is_one_row_a_line() -> None:
    text = _shown(200, terminal=True)
    rows = [line for line in text.splitlines() if ID in line]
    assert len(rows) == 2
    assert all(cell in rows[0] for cell in CELLS)
    assert "…" not in text


def test_a_narrow_terminal_gets_records_with_every_value_whole() -> None:
    text = _shown(60, terminal=True)
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 60
    lines = text.splitlines()
    for column, value in zip(("order", "instrument", "price", "status"), CELLS[::2], strict=True):
        assert any(column in line and value in line for line in lines), (column, value)
    assert sum("9.05" in line for line in lines) == 1  # the second record, on its own line


def test_output_that_is_not_a_terminal_is_the_table_at_full_width() -> None:
    text = _shown(40, terminal=False)
    rows = [line for line in text.splitlines() if ID in line]
    assert len(rows) == 2 and all(cell in rows[0] for cell in CELLS)
    assert "…" not in text


def test_a_row_must_fill_every_column() -> None:
    with pytest.raises(ValueError, match="3 cells for 7 columns"):
        _listing().add_row("1", "2", "3")
