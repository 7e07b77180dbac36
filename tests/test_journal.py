"""The journal's format: round trips, segments, torn tails, corruption, failed writes."""

from __future__ import annotations

import errno
import os
import struct
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from exchange import journal as jm
from exchange.commands import Command
from exchange.journal import (
    FILE_HEADER_SIZE,
    RECORD_HEADER_SIZE,
    Journal,
    JournalCorrupt,
    JournalReader,
    JournalWriteError,
    read_commands,
)
from tests.journal_stream import stream

SEED = 11


def batches_of(commands: list[Command], size: int) -> list[list[Command]]:
    return [commands[i : i + size] for i in range(0, len(commands), size)]


def write(directory: Path, commands: list[Command], size: int = 50, **kw: int) -> Journal:
    journal = Journal.open(directory, **kw)  # type: ignore[arg-type]
    seq = journal.next_seq
    for batch in batches_of(commands, size):
        journal.append(seq, batch)
        seq += len(batch)
    journal.close()
    return journal


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.wal"))


def record_offsets(path: Path) -> list[int]:
    data = path.read_bytes()
    offsets, pos = [], FILE_HEADER_SIZE
    while pos < len(data):
        offsets.append(pos)
        (length,) = struct.unpack_from("<I", data, pos + 4)
        pos += RECORD_HEADER_SIZE + length
    return offsets


@pytest.fixture
def commands() -> list[Command]:
    print("seed", SEED)
    return stream(SEED, 400)


def test_round_trip_keeps_every_command_in_order(tmp_path: Path, commands: list[Command]) -> None:
    write(tmp_path, commands, size=37)
    read = list(read_commands(tmp_path))
    assert [seq for seq, _ in read] == list(range(1, len(commands) + 1))
    assert [command for _, command in read] == commands
    assert next(iter(read_commands(tmp_path, after_seq=100))) == (101, commands[100])


def test_one_record_per_batch(tmp_path: Path, commands: list[Command]) -> None:
    journal = write(tmp_path, commands, size=100)
    assert journal.batches == len(batches_of(commands, 100))
    reader = JournalReader(tmp_path)
    assert [b.first_seq for b in reader.batches()] == [1, 101, 201, 301, 401][: journal.batches]


def test_segments_roll_over_and_read_as_one(tmp_path: Path, commands: list[Command]) -> None:
    write(tmp_path, commands, size=20, segment_bytes=8_000)
    files = segment_files(tmp_path)
    assert len(files) > 3
    assert files[0].name == "00000000000000000001.wal"
    assert [c for _, c in read_commands(tmp_path)] == commands
    # Reading after a sequence number starts in the segment that holds it.
    late = int(files[-1].name[:20])
    assert next(read_commands(tmp_path, late))[0] == late + 1


def test_appending_resumes_after_reopen(tmp_path: Path, commands: list[Command]) -> None:
    write(tmp_path, commands[:150])
    journal = write(tmp_path, commands[150:])
    assert journal.last_seq == len(commands)
    assert [c for _, c in read_commands(tmp_path)] == commands


def test_wrong_first_seq_is_refused(tmp_path: Path, commands: list[Command]) -> None:
    journal = Journal.open(tmp_path)
    with pytest.raises(jm.JournalError, match="expects 1"):
        journal.append(5, commands[:3])
    journal.close()


# --- torn tails ------------------------------------------------------------------------


def test_torn_last_record_is_dropped_at_every_cut(tmp_path: Path, commands: list[Command]) -> None:
    source = tmp_path / "source"
    write(source, commands[:200], size=50)
    (segment,) = segment_files(source)
    data = segment.read_bytes()
    last = record_offsets(segment)[-1]
    cuts = sorted({last + 1, last + 4, last + RECORD_HEADER_SIZE - 1, last + RECORD_HEADER_SIZE})
    cuts += [*range(last + RECORD_HEADER_SIZE + 1, len(data), 97), len(data) - 1]
    for cut in cuts:
        directory = tmp_path / f"cut{cut}"
        directory.mkdir()
        (directory / segment.name).write_bytes(data[:cut])
        with capture_logs() as logs:
            journal = Journal.open(directory)
        assert journal.last_seq == 150, cut
        assert [e["event"] for e in logs] == ["journal_torn_tail"]
        assert logs[0]["offset"] == last
        # The torn bytes are kept beside the segment, and cut off it.
        assert (directory / f"{segment.name}.torn-{last}").read_bytes() == data[last:cut]
        assert (directory / segment.name).stat().st_size == last
        # Appending goes on where the good records end.
        journal.append(151, commands[150:160])
        journal.close()
        assert [c for _, c in read_commands(directory)] == commands[:160]


@pytest.mark.parametrize(
    "tail",
    [b"\0" * 4096, b"garbage that is not a record" * 10, jm._RECORD_MAGIC_BYTES + b"\xff" * 40],
    ids=["zeros", "garbage", "bad-header"],
)
def test_junk_after_the_last_record_is_a_torn_tail(
    tmp_path: Path, commands: list[Command], tail: bytes
) -> None:
    write(tmp_path, commands[:100])
    (segment,) = segment_files(tmp_path)
    size = segment.stat().st_size
    with segment.open("ab") as handle:
        handle.write(tail)
    with capture_logs() as logs:
        journal = Journal.open(tmp_path)
    journal.close()
    assert journal.last_seq == 100
    assert logs[0]["event"] == "journal_torn_tail" and logs[0]["offset"] == size


def test_bad_checksum_in_the_last_record_is_torn(tmp_path: Path, commands: list[Command]) -> None:
    write(tmp_path, commands[:100])
    (segment,) = segment_files(tmp_path)
    data = bytearray(segment.read_bytes())
    data[-3] ^= 0xFF
    segment.write_bytes(bytes(data))
    reader = JournalReader(tmp_path)
    assert sum(len(b.commands) for b in reader.batches()) == 50
    assert reader.torn is not None and "checksum" in reader.torn.reason
    # Reading without repair leaves the file alone.
    assert segment.read_bytes() == bytes(data)


def test_torn_header_of_a_new_segment_is_dropped(tmp_path: Path, commands: list[Command]) -> None:
    write(tmp_path, commands[:100])
    new = tmp_path / jm.segment_name(101)
    new.write_bytes(jm.file_header(101)[:10])
    journal = Journal.open(tmp_path)
    assert journal.last_seq == 100
    assert not new.exists() and (tmp_path / f"{new.name}.torn-0").exists()
    journal.append(101, commands[100:120])
    journal.close()
    assert [c for _, c in read_commands(tmp_path)] == commands[:120]


# --- corruption ------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["record-header", "payload", "length"])
def test_damage_before_the_last_record_stops_the_start(
    tmp_path: Path, commands: list[Command], where: str
) -> None:
    write(tmp_path, commands[:200])
    (segment,) = segment_files(tmp_path)
    data = bytearray(segment.read_bytes())
    second = record_offsets(segment)[1]
    at = {"record-header": second + 12, "payload": second + RECORD_HEADER_SIZE + 5}.get(
        where, second + 4
    )
    data[at] ^= 0x41
    segment.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt) as caught:
        Journal.open(tmp_path)
    assert caught.value.path == segment and caught.value.offset == second
    assert str(segment) in str(caught.value) and f"byte {second}" in str(caught.value)
    assert segment.read_bytes() == bytes(data)  # nothing dropped


def test_damage_in_an_older_segment_stops_the_start(
    tmp_path: Path, commands: list[Command]
) -> None:
    write(tmp_path, commands, size=20, segment_bytes=8_000)
    first = segment_files(tmp_path)[0]
    data = bytearray(first.read_bytes())
    data[-1] ^= 1  # the last record of a segment that is not the newest
    first.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt, match="not the newest"):
        list(JournalReader(tmp_path).batches())


def test_truncated_older_segment_stops_the_start(tmp_path: Path, commands: list[Command]) -> None:
    write(tmp_path, commands, size=20, segment_bytes=8_000)
    first = segment_files(tmp_path)[0]
    with first.open("r+b") as handle:
        handle.truncate(first.stat().st_size - 10)
    with pytest.raises(JournalCorrupt, match=first.name):
        list(JournalReader(tmp_path).batches())


def test_missing_segment_is_a_gap(tmp_path: Path, commands: list[Command]) -> None:
    write(tmp_path, commands, size=20, segment_bytes=8_000)
    files = segment_files(tmp_path)
    files[1].unlink()
    with pytest.raises(JournalCorrupt, match="segment is missing") as caught:
        list(JournalReader(tmp_path).batches())
    assert caught.value.path == files[2]


def test_newer_format_version_is_named(tmp_path: Path, commands: list[Command]) -> None:
    write(tmp_path, commands[:10])
    (segment,) = segment_files(tmp_path)
    data = bytearray(segment.read_bytes())
    data[:FILE_HEADER_SIZE] = jm.file_header(1, version=9)
    segment.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt, match="format version 9"):
        list(JournalReader(tmp_path).batches())


def test_segment_name_must_match_header(tmp_path: Path, commands: list[Command]) -> None:
    write(tmp_path, commands[:10])
    (segment,) = segment_files(tmp_path)
    segment.rename(tmp_path / jm.segment_name(2))
    with pytest.raises(JournalCorrupt):
        list(JournalReader(tmp_path).batches(1))


# --- failed writes ---------------------------------------------------------------------


def test_failed_write_undoes_the_batch_and_stops_the_journal(
    tmp_path: Path, commands: list[Command], monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal.open(tmp_path)
    journal.append(1, commands[:50])
    size = segment_files(tmp_path)[0].stat().st_size
    real_pwrite = os.pwrite

    def disk_full(fd: int, data: memoryview, offset: int) -> int:
        real_pwrite(fd, data[: len(data) // 3], offset)  # part of it lands, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", disk_full)
    with pytest.raises(JournalWriteError, match="No space left"):
        journal.append(51, commands[50:100])
    monkeypatch.setattr(os, "pwrite", real_pwrite)
    assert segment_files(tmp_path)[0].stat().st_size == size  # cut back to the last good record
    with pytest.raises(JournalWriteError, match="earlier failure"):
        journal.append(51, commands[50:100])
    journal.close()
    assert [c for _, c in read_commands(tmp_path)] == commands[:50]


def test_failed_fsync_stops_the_journal(
    tmp_path: Path, commands: list[Command], monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal.open(tmp_path)
    journal.append(1, commands[:10])

    def io_error(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(jm, "_fsync", io_error)
    with pytest.raises(JournalWriteError, match="Input/output error"):
        journal.append(11, commands[10:20])
    monkeypatch.undo()
    journal.close()
    assert [c for _, c in read_commands(tmp_path)] == commands[:10]
