"""Journal retention: segments behind the oldest kept snapshot are archived or deleted.

Each run drives the same seeded stream through a store with small segments
and frequent snapshots, so retention happens many times; a run with
``retention="keep"`` is the reference: the same files, none retired.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from structlog.testing import capture_logs

from clients.cli import main as cli
from exchange import audit
from exchange.commands import Command
from exchange.journal import Journal, JournalError, list_segments
from exchange.snapshot import list_snapshots
from exchange.store import (
    ARCHIVE_DIR,
    RETENTION_LOG,
    StoreError,
    history_reader,
    open_store,
    read_retention_log,
    retire_segments,
)
from tests.journal_stream import stream
from tests.store_runs import drive, never_stopped, recovered

SEED = 51
N = 1_500
EVERY = 200  # commands between snapshots
KEEP = 2  # snapshots kept
SEGMENT_BYTES = 10_000  # a few records per segment


@pytest.fixture(scope="module")
def commands() -> list[Command]:
    print("seed", SEED)
    return stream(SEED, N)


def run(data_dir: Path, commands: list[Command], retention: str, capture: str = "fork") -> Path:
    store = open_store(
        data_dir,
        snapshot_every=EVERY,
        keep_snapshots=KEEP,
        segment_bytes=SEGMENT_BYTES,
        retention=retention,  # type: ignore[arg-type]
        snapshot_capture=capture,  # type: ignore[arg-type]
    )
    drive(store, commands)
    assert store.snapshot_failure is None
    store.close()
    return data_dir


def names(directory: Path) -> list[str]:
    return [s.path.name for s in list_segments(directory)] if directory.is_dir() else []


def behind(reference: Path, oldest_kept: int) -> list[str]:
    """The reference run's segments whose every command is at or before ``oldest_kept``."""
    segments = list_segments(reference / "journal")
    return [s.path.name for s, n in itertools.pairwise(segments) if n.first_seq - 1 <= oldest_kept]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, commands: list[Command]) -> Path:
    return run(tmp_path_factory.mktemp("keep"), commands, "keep")


@pytest.mark.parametrize(
    ("retention", "capture"), [("archive", "fork"), ("archive", "loop"), ("delete", "fork")]
)
def test_only_segments_behind_the_oldest_kept_snapshot_are_retired(
    tmp_path: Path, commands: list[Command], reference: Path, retention: str, capture: str
) -> None:
    data_dir = run(tmp_path, commands, retention, capture)
    kept = [seq for seq, _ in list_snapshots(data_dir / "snapshots")]
    assert kept == [seq for seq, _ in list_snapshots(reference / "snapshots")]
    assert len(kept) == KEEP and kept[-1] >= len(commands) - EVERY
    retired = behind(reference, kept[0])
    everything = names(reference / "journal")
    assert 3 <= len(retired) < len(everything) - 1  # retention did happen, and not to all
    live = names(data_dir / "journal")
    assert live == everything[len(retired) :]
    # The first live segment holds the command after the oldest kept snapshot.
    first, second = list_segments(data_dir / "journal")[:2]
    assert first.first_seq <= kept[0] + 1 < second.first_seq
    log = read_retention_log(data_dir)
    assert [r.segment for r in log] == retired
    assert all(r.last_seq <= r.behind_snapshot <= kept[0] for r in log)
    if retention == "archive":
        assert names(data_dir / ARCHIVE_DIR) == retired
        for name in everything:  # every byte is still somewhere, unchanged
            where = "journal" if name in live else ARCHIVE_DIR
            assert (data_dir / where / name).read_bytes() == (
                reference / "journal" / name
            ).read_bytes()
        assert {r.action for r in log} == {"archived"}
    else:
        assert not (data_dir / ARCHIVE_DIR).exists()
        assert {r.action for r in log} == {"deleted"}


@pytest.mark.parametrize("retention", ["archive", "delete"])
def test_recovery_after_retention_is_the_state_of_a_run_that_never_stopped(
    tmp_path: Path, commands: list[Command], retention: str
) -> None:
    data_dir = run(tmp_path, commands, retention)
    expected = never_stopped(commands)
    state, store = recovered(data_dir)
    assert state == expected
    assert store.recovery.snapshot_seq == list_snapshots(data_dir / "snapshots")[-1][0]
    assert store.recovery.archived_segments == 0  # the archive is never needed
    # The newest snapshot damaged: the older kept one still needs no retired segment.
    newest = list_snapshots(data_dir / "snapshots")[-1][1]
    newest.write_bytes(newest.read_bytes()[:-10])
    state, store = recovered(data_dir)
    assert state == expected
    assert store.recovery.snapshot_seq == list_snapshots(data_dir / "snapshots")[0][0]
    assert store.recovery.archived_segments == 0
    # Every snapshot damaged: only the archive can help.
    oldest = list_snapshots(data_dir / "snapshots")[0][1]
    oldest.write_bytes(b"garbage")
    if retention == "delete":
        with pytest.raises(StoreError, match=r"retention deleted \d+ segments"):
            open_store(data_dir)
        return
    with capture_logs() as logs:
        state, store = recovered(data_dir)
    assert state == expected
    assert store.recovery.snapshot_seq == 0
    assert store.recovery.archived_segments == len(names(data_dir / ARCHIVE_DIR)) > 0
    assert "recovery_reads_archive" in [e["event"] for e in logs]


def test_the_journal_alone_reads_the_archive(tmp_path: Path, commands: list[Command]) -> None:
    data_dir = run(tmp_path, commands, "archive")
    state, store = recovered(data_dir, use_snapshots=False)
    assert state == never_stopped(commands)
    assert store.recovery.replayed == len(commands)
    assert audit.problems(store.core) == []


def test_a_snapshot_that_fails_verification_retires_nothing(
    tmp_path: Path, commands: list[Command], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(
        tmp_path, snapshot_every=EVERY, keep_snapshots=1, segment_bytes=SEGMENT_BYTES
    )
    drive(store, commands[:700])
    retired = names(tmp_path / ARCHIVE_DIR)
    kept = list_snapshots(tmp_path / "snapshots")
    assert retired and len(kept) == 1
    # From here every snapshot loads but breaks an invariant (in the forked child too).
    monkeypatch.setattr(audit, "problems", lambda core, **kw: ["money not conserved"])
    with capture_logs() as logs:
        drive(store, commands[700:])
        with pytest.raises(Exception, match="money not conserved"):
            store.snapshot()
    failed = [e for e in logs if e["event"] == "snapshot_failed"]
    assert len(failed) >= 3 and "money not conserved" in failed[0]["error"]
    assert not [e for e in logs if e["event"].startswith("journal_segment")]
    assert names(tmp_path / ARCHIVE_DIR) == retired
    assert list_snapshots(tmp_path / "snapshots") == kept  # the good one is still the one kept
    assert list((tmp_path / "snapshots").glob("*.snap.unverified"))  # set aside, not kept
    store.close()
    monkeypatch.undo()
    state, _ = recovered(tmp_path)
    assert state == never_stopped(commands)


def test_on_demand_snapshots_retire_too(tmp_path: Path, commands: list[Command]) -> None:
    store = open_store(tmp_path, snapshot_every=0, keep_snapshots=1, segment_bytes=SEGMENT_BYTES)
    drive(store, commands)
    assert not (tmp_path / ARCHIVE_DIR).exists()
    path = store.snapshot()
    assert store.last_snapshot is not None and store.last_snapshot.path == str(path)
    # Only the newest segment stays: every earlier command is in the snapshot.
    assert len(names(tmp_path / "journal")) == 1
    store.close()
    state, _ = recovered(tmp_path)
    assert state == never_stopped(commands)


@pytest.mark.parametrize(
    ("behind", "retired"),
    [(9, []), (10, [1]), (19, [1]), (20, [1, 11]), (21, [1, 11]), (10**6, [1, 11, 21, 31])],
)
def test_retirement_boundaries(
    tmp_path: Path, commands: list[Command], behind: int, retired: list[int]
) -> None:
    """Segments of ten commands each (1-10, 11-20, ...): a segment goes once its last
    command is at or before ``behind``; the newest (41-50) never goes."""
    journal = Journal.open(tmp_path / "journal", segment_bytes=1)  # a segment per batch
    for first in range(1, 51, 10):
        journal.append(first, commands[first - 1 : first + 9])
    journal.close()
    done = retire_segments(tmp_path, behind, "archive")
    assert [r.first_seq for r in done] == retired
    assert [r.last_seq for r in done] == [first + 9 for first in retired]
    assert [int(name[:20]) for name in names(tmp_path / ARCHIVE_DIR)] == retired
    assert [s.first_seq for s in list_segments(tmp_path / "journal")] == [
        first for first in range(1, 51, 10) if first not in retired
    ]


def test_the_newest_segment_with_a_record_stays_when_a_new_one_is_empty(
    tmp_path: Path, commands: list[Command]
) -> None:
    """A segment just started holds only its header: a crash now would drop it as a
    torn tail, so the one before it must stay live, or the journal would end nowhere."""
    journal = Journal.open(tmp_path / "journal", segment_bytes=1)
    for first in (1, 11):
        journal.append(first, commands[first - 1 : first + 9])
    journal._start_segment(21)  # what append does first, before the record reaches it
    journal.close()
    done = retire_segments(tmp_path, 20, "archive")
    assert [(r.first_seq, r.last_seq) for r in done] == [(1, 10)]
    assert [s.first_seq for s in list_segments(tmp_path / "journal")] == [11, 21]


def test_retention_keep_retires_nothing(reference: Path) -> None:
    assert not (reference / ARCHIVE_DIR).exists()
    assert not (reference / RETENTION_LOG).exists()
    assert len(list_snapshots(reference / "snapshots")) == KEEP


def test_a_torn_tail_file_goes_with_its_segment(tmp_path: Path, commands: list[Command]) -> None:
    store = open_store(tmp_path, snapshot_every=0, segment_bytes=SEGMENT_BYTES)
    drive(store, commands[:300])
    first = list_segments(tmp_path / "journal")[0].path
    torn = first.with_name(first.name + ".torn-4096")
    torn.write_bytes(b"never acknowledged")
    store.snapshot()
    store.close()
    assert (tmp_path / ARCHIVE_DIR / torn.name).read_bytes() == b"never acknowledged"
    assert not torn.exists()


def test_an_archive_conflict_moves_nothing(tmp_path: Path, commands: list[Command]) -> None:
    store = open_store(tmp_path, snapshot_every=0, segment_bytes=SEGMENT_BYTES)
    drive(store, commands[:300])
    live = names(tmp_path / "journal")
    (tmp_path / ARCHIVE_DIR).mkdir()
    (tmp_path / ARCHIVE_DIR / live[1]).write_bytes(b"someone else's file")
    with capture_logs() as logs:
        store.snapshot()
    failed = [e for e in logs if e["event"] == "retention_failed"]
    assert failed and live[1] in failed[0]["error"] and "exists" in failed[0]["error"]
    assert names(tmp_path / "journal") == live
    assert not (tmp_path / RETENTION_LOG).exists()
    store.close()


def test_a_segment_in_both_places_is_an_error(tmp_path: Path, commands: list[Command]) -> None:
    run(tmp_path, commands, "archive")
    archived = names(tmp_path / ARCHIVE_DIR)[-1]
    (tmp_path / "journal" / archived).write_bytes((tmp_path / ARCHIVE_DIR / archived).read_bytes())
    with pytest.raises(JournalError, match=f"{archived} is in two places"):
        history_reader(tmp_path)
    code, out = invoke("journal", "verify", str(tmp_path))
    assert code == 1 and "in two places" in out


@pytest.mark.parametrize(
    "options",
    [
        {"retention": "forever"},
        {"snapshot_capture": "thread"},
        {"keep_snapshots": 0},
        {"snapshot_every": -1},
    ],
)
def test_bad_options_are_refused_before_anything_changes(
    tmp_path: Path, options: dict[str, object]
) -> None:
    name = next(iter(options))
    with pytest.raises(ValueError, match=name):
        open_store(tmp_path / "data", **options)  # type: ignore[arg-type]
    assert not (tmp_path / "data").exists()


# --- the audit tools over archive and live journal ---------------------------------------


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout if "--json" in args else result.output


def verify(data_dir: Path) -> dict[str, object]:
    code, out = invoke("journal", "verify", str(data_dir), "--json", "--check-every", "300")
    assert code == 0, out
    summary: dict[str, object] = json.loads(out)
    return summary


def test_verify_and_export_see_the_whole_history_through_the_archive(
    tmp_path: Path, commands: list[Command], reference: Path
) -> None:
    data_dir = run(tmp_path / "data", commands, "archive")
    before, after = verify(reference), verify(data_dir)
    assert after["archived_segments"] == len(names(data_dir / ARCHIVE_DIR)) > 0
    assert before["archived_segments"] == 0
    for key in ("path", "seconds", "snapshots", "archived_segments"):
        before.pop(key), after.pop(key)
    assert after == before
    assert after["ok"] is True and after["commands"] == len(commands)
    assert after["state_digest"] == never_stopped(commands)
    exports = []
    for directory in (reference, data_dir):
        out = tmp_path / f"{directory.name}.csv"
        claims = tmp_path / f"{directory.name}-claims.csv"
        code, text = invoke(
            "journal", "export", str(directory), "--out", str(out), "--claims", str(claims)
        )
        assert code == 0, text
        exports.append((out.read_bytes(), claims.read_bytes()))
    assert exports[0] == exports[1] and exports[0][0].count(b"\n") > 100
    # The live journal directory alone cannot start at 1, and says where the rest is.
    code, out = invoke("journal", "verify", str(data_dir / "journal"))
    assert code == 1
    assert "needs command 1" in out and ARCHIVE_DIR in out and "pass the data directory" in out


def test_verify_and_export_say_what_retention_deleted(
    tmp_path: Path, commands: list[Command]
) -> None:
    data_dir = run(tmp_path / "data", commands, "delete")
    first = list_segments(data_dir / "journal")[0].first_seq
    deleted = read_retention_log(data_dir)
    code, out = invoke("journal", "verify", str(data_dir))
    assert code == 1
    text = " ".join(out.split())
    assert f"commands 1 to {first - 1} are in neither journal/ nor archive/" in text
    assert f"retention deleted {len(deleted)} segments" in text
    assert "cannot be replayed from command 1" in text
    code, out = invoke("journal", "verify", str(data_dir), "--json")
    assert code == 1 and "retention deleted" in json.loads(out)["error"]
    code, out = invoke("journal", "export", str(data_dir), "--out", str(tmp_path / "c.csv"))
    assert code == 1 and "retention deleted" in " ".join(out.split())
    assert not (tmp_path / "c.csv").exists()  # refused before writing anything
