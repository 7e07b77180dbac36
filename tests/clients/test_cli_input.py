"""What the command line accepts for prices, times and a journal's path."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from clients.cli import main
from clients.cli_market import parse_price, parse_time

NOW = 1_790_000_000 * 10**9


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("2026-12-01", 1_796_083_200 * 10**9),
        ("2026-12-01T08:00", 1_796_112_000 * 10**9),
        ("2026-12-01T16:00+08:00", 1_796_112_000 * 10**9),
        ("2026-12-01T08:00:00.25", 1_796_112_000 * 10**9 + 250_000_000),
        ("+90s", NOW + 90 * 10**9),
        ("+30m", NOW + 1_800 * 10**9),
        ("+2h", NOW + 7_200 * 10**9),
        ("+1d", NOW + 86_400 * 10**9),
        ("1796112000000000000", 1_796_112_000 * 10**9),
    ],
)
def test_times(text: str, ns: int) -> None:
    assert parse_time(text, now=NOW) == ns


@pytest.mark.parametrize("text", ["tomorrow", "+2w", "+h", "+-3h", "2026-13-01", ""])
def test_a_time_that_is_not_one_is_a_usage_error(text: str) -> None:
    with pytest.raises(click.BadParameter):
        parse_time(text, now=NOW)


@pytest.mark.parametrize(("text", "fen"), [("18.05", 1_805), ("18", 1_800), ("0.01", 1)])
def test_prices(text: str, fen: int) -> None:
    assert parse_price(text) == fen


@pytest.mark.parametrize("text", ["18.055", "eighteen", "1e-3"])
def test_a_price_that_is_not_whole_fen_is_a_usage_error(text: str) -> None:
    with pytest.raises(click.BadParameter):
        parse_price(text)


@pytest.mark.parametrize(
    ("command", "options"),
    [("verify", []), ("verify", ["--json"]), ("export", ["--out", "contracts.csv"])],
)
def test_a_directory_without_a_journal_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, options: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("docs").mkdir()
    Path("docs/notes.md").write_text("no journal here\n")
    result = CliRunner().invoke(main, ["journal", command, "docs", *options])
    assert result.exit_code == 2, result.output
    assert "'docs' holds no journal" in result.output
    assert "journal sound" not in result.output
    assert not Path("contracts.csv").exists()


def test_a_data_directory_with_an_empty_journal_is_sound(tmp_path: Path) -> None:
    (tmp_path / "journal").mkdir()  # a store that has not journalled a command yet
    result = CliRunner().invoke(main, ["journal", "verify", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "journal sound" in result.output
