"""``suanli journal verify`` and ``suanli journal export``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from clients.cli import CONTRACT_COLUMNS, main
from exchange import audit
from exchange.core import ExchangeCore
from exchange.journal import Journal
from exchange.snapshot import capture, digest, write_snapshot
from exchange.store import open_store
from tests.journal_stream import stream

SEED = 41
N = 800


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data directory with a journal of the seeded stream and one snapshot."""
    print("seed", SEED)
    commands = stream(SEED, N)
    journal = Journal.open(tmp_path / "journal")
    for first in range(0, len(commands), 64):
        journal.append(first + 1, commands[first : first + 64])
    journal.close()
    store = open_store(tmp_path, snapshot_every=0)
    store.snapshot()
    store.close()
    return tmp_path


def model(data_dir: Path) -> ExchangeCore:
    store = open_store(data_dir, use_snapshots=False)
    store.close()
    return store.core


def invoke(*args: str) -> tuple[int, str]:
    """Exit code, and stdout alone with --json (logs go to stderr) or both without."""
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout if "--json" in args else result.output


def test_verify_replays_and_summarises(data_dir: Path) -> None:
    code, out = invoke("journal", "verify", str(data_dir), "--json", "--check-every", "50")
    assert code == 0, out
    summary = json.loads(out)
    core = model(data_dir)
    assert summary["ok"] is True
    assert summary["commands"] == summary["last_seq"] == len(stream(SEED, N))
    assert summary["trades"] == len(core.contracts) > 0
    assert summary["invariant_checks"] == summary["commands"] // 50 + 1
    assert summary["problems"] == [] and summary["torn_tail"] is None
    assert summary["state_digest"] == digest(core)
    assert summary["balances_digest"] == audit.balances_digest(core)
    assert [s["ok"] for s in summary["snapshots"]] == [True]


def test_verify_prints_a_readable_summary(data_dir: Path) -> None:
    code, out = invoke("journal", "verify", str(data_dir / "journal"))
    assert code == 0, out
    assert "journal sound" in out
    core = model(data_dir)
    # Whole digests, to compare with another replica's, however narrow the output.
    assert f"balances digest    {audit.balances_digest(core)}\n" in out
    assert f"state digest       {digest(core)}\n" in out


def test_verify_reports_corruption_with_file_and_byte(data_dir: Path) -> None:
    (segment,) = (data_dir / "journal").glob("*.wal")
    data = bytearray(segment.read_bytes())
    data[100] ^= 0xFF
    segment.write_bytes(bytes(data))
    code, out = invoke("journal", "verify", str(data_dir))
    assert code == 1
    assert "journal corrupt" in out and segment.name in out and "at byte" in out
    code, out = invoke("journal", "verify", str(data_dir), "--json")
    assert code == 1 and json.loads(out)["ok"] is False


def test_verify_reports_a_torn_tail_without_touching_it(data_dir: Path) -> None:
    (segment,) = (data_dir / "journal").glob("*.wal")
    with segment.open("ab") as handle:
        handle.write(b"\0" * 100)
    size = segment.stat().st_size
    code, out = invoke("journal", "verify", str(segment), "--json")
    assert code == 0, out
    torn = json.loads(out)["torn_tail"]
    assert torn["bytes"] == 100 and torn["offset"] == size - 100
    assert segment.stat().st_size == size


def test_verify_fails_when_a_snapshot_differs(data_dir: Path) -> None:
    other = ExchangeCore()
    other.apply(stream(SEED, 0)[0])
    (snapshot,) = (data_dir / "snapshots").glob("*.snap")
    seq = int(snapshot.name[9:29])
    write_snapshot(data_dir / "snapshots", seq, capture(other, seq))
    code, out = invoke("journal", "verify", str(data_dir))
    assert code == 1
    assert "differs" in out and "NOT sound" in out


def test_verify_fails_on_a_broken_invariant(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit, "problems", lambda core, **kw: ["money not conserved"])
    code, out = invoke("journal", "verify", str(data_dir), "--json")
    assert code == 1
    assert json.loads(out)["problems"][0].endswith("money not conserved")


def test_export_writes_one_row_per_contract(data_dir: Path, tmp_path: Path) -> None:
    out_file, claims_file = tmp_path / "contracts.csv", tmp_path / "claims.csv"
    code, out = invoke(
        "journal", "export", str(data_dir), "--out", str(out_file), "--claims", str(claims_file)
    )
    assert code == 0, out
    core = model(data_dir)
    with out_file.open() as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CONTRACT_COLUMNS
    assert [int(r["contract_id"]) for r in rows] == sorted(core.contracts)
    for row in rows:
        trade = core.contracts[int(row["contract_id"])]
        assert int(row["cash_fen"]) + int(row["voucher_fen"]) == int(row["value_fen"])
        assert (row["buyer"], row["seller"], int(row["price_fen"])) == (
            trade.buyer,
            trade.seller,
            trade.price,
        )
    assert any(int(r["voucher_fen"]) for r in rows)  # the stream pays with a voucher
    with claims_file.open() as handle:
        claims = list(csv.DictReader(handle))
    assert len(claims) == len(core.claims)
    assert sum(int(c["settled"]) for c in claims) == sum(c.settled for c in core.claims.values())


def test_help_shows_an_example() -> None:
    code, out = invoke("journal", "verify", "--help")
    assert code == 0 and "suanli journal verify data/" in out
    code, out = invoke("journal", "export", "--help")
    assert code == 0 and "--out contracts.csv" in out


def test_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    code, out = invoke("journal", "verify", str(tmp_path / "nope"))
    assert code == 2 and "does not exist" in out
