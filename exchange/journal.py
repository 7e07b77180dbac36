"""The write-ahead journal: every accepted command, in order, before it is applied.

The service hands the journal each batch of stamped commands; ``append``
writes the whole batch as one record and makes it durable with one
``fdatasync`` (group commit) before the service applies any of it. Replaying
the journal's commands into a fresh core rebuilds the exact state, because the
core is deterministic (``exchange.core``).

Layout
------
A journal is a directory of segment files named by the sequence number of
their first command, ``00000000000000000001.wal``. A segment is a file header
then records; a new segment starts when the current one would pass
``segment_bytes``. All integers are little-endian. Segments a snapshot has
made unnecessary may be moved to an archive directory (``exchange.store``'s
retention); ``merge_segments`` joins the listings of both directories, and a
``JournalReader`` given the result reads them as one journal.

File header, 24 bytes::

    magic      8s   b"SUANLIJ\\n"
    version    u16  FORMAT_VERSION of the records that follow
    flags      u16  0
    first_seq  u64  sequence number of the segment's first command
    crc        u32  CRC-32 of the 20 bytes before it

Record, one per batch, 28 bytes of header then the payload::

    magic        u32  RECORD_MAGIC, to find records again after damage
    length       u32  payload bytes
    first_seq    u64  sequence number of the batch's first command
    count        u32  commands in the batch
    payload_crc  u32  CRC-32 of the payload
    header_crc   u32  CRC-32 of the 24 header bytes before it

The payload (format 1) is a msgpack array of the batch's commands, each a
tagged ``exchange.commands`` Struct. A batch is all or nothing: it was
acknowledged only once it was whole on disk.

Damage
------
A crash in the middle of ``append`` can leave the newest segment ending in
part of a record, or in bytes that are not a record (a file system may extend
the file before its data lands). That is a *torn tail*: damage in the newest
segment after which no valid record follows. Its commands were never
acknowledged, so opening the journal for writing drops it, keeps its bytes in a
``.torn-<offset>`` file beside the segment, and logs a warning. Damage anywhere
else (an older segment, or a bad record with a valid record after it, a
sequence gap, a segment whose name and header disagree) raises
``JournalCorrupt`` naming the file and byte offset, and nothing is dropped.

Faults
------
A failed write or fsync (a full disk, an I/O error) truncates the segment
back to where the batch began, marks the journal failed and raises
``JournalWriteError``; every later ``append`` raises too, so the service stops
taking commands instead of acknowledging what it could not store.
"""

from __future__ import annotations

import errno
import os
import re
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
import structlog

from exchange.commands import Command

log = structlog.get_logger("exchange.journal")

FORMAT_VERSION = 1
FILE_MAGIC = b"SUANLIJ\n"
RECORD_MAGIC = 0x4C4E5553  # b"SUNL" read little-endian
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
MAX_RECORD_BYTES = 1 << 30

_FILE_HEADER = struct.Struct("<8sHHQ")
_FILE_CRC = struct.Struct("<I")
FILE_HEADER_SIZE = _FILE_HEADER.size + _FILE_CRC.size  # 24
_RECORD_HEAD = struct.Struct("<IIQII")
_RECORD_CRC = struct.Struct("<I")
RECORD_HEADER_SIZE = _RECORD_HEAD.size + _RECORD_CRC.size  # 28
_RECORD_MAGIC_BYTES = RECORD_MAGIC.to_bytes(4, "little")
_SEGMENT_NAME = re.compile(r"^(\d{20})\.wal$")

# One decoder per format version this release can read; a later release adds
# entries here and keeps the old ones.
_DECODERS: dict[int, Callable[[bytes | memoryview], list[Command]]] = {
    1: msgspec.msgpack.Decoder(list[Command]).decode,
}

_fsync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)


class JournalError(Exception):
    """A journal cannot be read or written."""


class JournalCorrupt(JournalError):
    """Damage that is not a torn tail: the journal cannot be trusted past ``offset``."""

    def __init__(self, path: Path, offset: int, detail: str) -> None:
        super().__init__(f"journal corrupt: {path} at byte {offset}: {detail}")
        self.path = path
        self.offset = offset
        self.detail = detail


class JournalWriteError(JournalError):
    """A batch could not be made durable; the journal accepts nothing more."""


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}.wal"


def file_header(first_seq: int, version: int = FORMAT_VERSION) -> bytes:
    head = _FILE_HEADER.pack(FILE_MAGIC, version, 0, first_seq)
    return head + _FILE_CRC.pack(zlib.crc32(head))


def encode_record(
    first_seq: int, commands: Sequence[Command], encoder: msgspec.msgpack.Encoder
) -> bytearray:
    """One batch as record bytes (header and payload)."""
    buffer = bytearray()
    encoder.encode_into(commands, buffer, RECORD_HEADER_SIZE)
    payload = memoryview(buffer)[RECORD_HEADER_SIZE:]
    length = len(payload)
    if length > MAX_RECORD_BYTES:
        raise ValueError(f"batch of {len(commands)} commands encodes to {length} bytes")
    head = _RECORD_HEAD.pack(RECORD_MAGIC, length, first_seq, len(commands), zlib.crc32(payload))
    payload.release()
    buffer[: _RECORD_HEAD.size] = head
    buffer[_RECORD_HEAD.size : RECORD_HEADER_SIZE] = _RECORD_CRC.pack(zlib.crc32(head))
    return buffer


# --- reading -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment file as its name and header describe it."""

    path: Path
    first_seq: int
    size: int


@dataclass(frozen=True, slots=True)
class Batch:
    """One record: ``commands`` are numbered from ``first_seq``."""

    first_seq: int
    commands: list[Command]
    path: Path
    offset: int
    size: int  # bytes of the whole record

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.commands) - 1


@dataclass(frozen=True, slots=True)
class TornTail:
    """Damage at the end of the newest segment: never-acknowledged bytes."""

    path: Path
    offset: int
    length: int
    reason: str
    saved_to: Path | None = None  # where the dropped bytes were kept (on repair)


@dataclass(frozen=True, slots=True)
class Tail:
    """Where appending resumes: the newest segment and the end of its valid records."""

    next_seq: int
    path: Path | None  # None: no segment yet
    size: int


def list_segments(directory: Path) -> list[Segment]:
    """The directory's segment files in sequence order (headers not yet read)."""
    segments = []
    for entry in os.scandir(directory):
        match = _SEGMENT_NAME.match(entry.name)
        if match and entry.is_file():
            segments.append(Segment(Path(entry.path), int(match.group(1)), entry.stat().st_size))
    segments.sort(key=lambda s: s.first_seq)
    return segments


def merge_segments(*listings: list[Segment]) -> list[Segment]:
    """Segment listings of several directories (an archive, the live journal) as one.

    A segment's first command may appear in one directory only: two files for
    the same segment raise ``JournalError`` naming both, rather than pick one.
    """
    by_seq: dict[int, Segment] = {}
    for segment in (s for listing in listings for s in listing):
        other = by_seq.setdefault(segment.first_seq, segment)
        if other is not segment:
            raise JournalError(
                f"segment {segment_name(segment.first_seq)} is in two places: "
                f"{other.path} and {segment.path}; keep one"
            )
    return [by_seq[seq] for seq in sorted(by_seq)]


def _record_at(data: bytes, pos: int) -> tuple[int, int, int, int] | str:
    """(length, first_seq, count, end) of a whole, valid record at ``pos``, or what is wrong."""
    end_of_data = len(data)
    if pos + RECORD_HEADER_SIZE > end_of_data:
        return f"record header cut short ({end_of_data - pos} of {RECORD_HEADER_SIZE} bytes)"
    magic, length, first_seq, count, payload_crc = _RECORD_HEAD.unpack_from(data, pos)
    (header_crc,) = _RECORD_CRC.unpack_from(data, pos + _RECORD_HEAD.size)
    if magic != RECORD_MAGIC:
        return f"no record magic (found {magic:#010x})"
    if zlib.crc32(data[pos : pos + _RECORD_HEAD.size]) != header_crc:
        return "record header checksum mismatch"
    end = pos + RECORD_HEADER_SIZE + length
    if end > end_of_data:
        return f"record cut short ({end_of_data - pos} of {end - pos} bytes)"
    if zlib.crc32(data[pos + RECORD_HEADER_SIZE : end]) != payload_crc:
        return "record payload checksum mismatch"
    if count == 0:
        return "record holds no commands"
    return length, first_seq, count, end


def _valid_record_after(data: bytes, pos: int) -> int:
    """The offset of the first valid record starting after ``pos``; -1 if none."""
    at = data.find(_RECORD_MAGIC_BYTES, pos + 1)
    while at != -1:
        if not isinstance(_record_at(data, at), str):
            return at
        at = data.find(_RECORD_MAGIC_BYTES, at + 1)
    return -1


class JournalReader:
    """Reads a journal directory, checking every record on the way.

    Iterate ``batches(after_seq)`` to get every batch holding a command numbered
    above ``after_seq``; once it is exhausted, ``tail`` says where appending
    resumes and ``torn`` describes a dropped torn tail, if there was one. With
    ``repair=True`` a torn tail is cut off the file (its bytes kept beside it);
    otherwise the files are only read.
    """

    def __init__(self, directory: Path, segments: list[Segment] | None = None) -> None:
        self.directory = directory
        if segments is None:
            segments = list_segments(directory) if directory.is_dir() else []
        self.segments = segments
        self.torn: TornTail | None = None
        self.tail: Tail | None = None
        self.records = 0

    @classmethod
    def for_file(cls, path: Path) -> JournalReader:
        """A reader of one segment file alone (its name gives its first command)."""
        match = _SEGMENT_NAME.match(path.name)
        if match is None:
            raise JournalError(f"{path}: not a journal segment name (<20 digits>.wal)")
        return cls(path.parent, [Segment(path, int(match.group(1)), path.stat().st_size)])

    @property
    def total_bytes(self) -> int:
        return sum(s.size for s in self.segments)

    @property
    def first_seq(self) -> int:
        """The first sequence number the journal holds (1 for an empty journal)."""
        return self.segments[0].first_seq if self.segments else 1

    def batches(self, after_seq: int = 0, *, repair: bool = False) -> Iterator[Batch]:
        segments = self.segments
        start = 0
        for i, segment in enumerate(segments):
            if segment.first_seq <= after_seq + 1:
                start = i
        if segments and segments[start].first_seq > after_seq + 1:
            raise JournalCorrupt(
                segments[start].path,
                0,
                f"journal starts at command {segments[start].first_seq}, "
                f"but commands from {after_seq + 1} are needed",
            )
        expected = segments[start].first_seq if segments else after_seq + 1
        tail = Tail(expected, None, 0)
        for i in range(start, len(segments)):
            segment = segments[i]
            last = i == len(segments) - 1
            if segment.first_seq != expected:
                raise JournalCorrupt(
                    segment.path,
                    0,
                    f"segment starts at command {segment.first_seq}, expected {expected}"
                    " (a segment is missing or out of place)",
                )
            data = segment.path.read_bytes()
            problem = self._check_file_header(segment, data)
            if problem is not None:
                self._damage(segment, data, 0, problem, last=last, repair=repair)
                break  # a torn, empty newest segment: the tail stays where it was
            pos = FILE_HEADER_SIZE
            decode = _DECODERS[int.from_bytes(data[8:10], "little")]
            while pos < len(data):
                found = _record_at(data, pos)
                if isinstance(found, str):
                    self._damage(segment, data, pos, found, last=last, repair=repair)
                    break
                _, first_seq, count, end = found
                if first_seq != expected:
                    raise JournalCorrupt(
                        segment.path,
                        pos,
                        f"record starts at command {first_seq}, expected {expected}",
                    )
                expected = first_seq + count
                self.records += 1
                if expected - 1 > after_seq:
                    try:
                        commands = decode(memoryview(data)[pos + RECORD_HEADER_SIZE : end])
                    except msgspec.DecodeError as exc:
                        raise JournalCorrupt(
                            segment.path, pos, f"undecodable record: {exc}"
                        ) from exc
                    if len(commands) != count:
                        raise JournalCorrupt(
                            segment.path,
                            pos,
                            f"record says {count} commands, holds {len(commands)}",
                        )
                    yield Batch(first_seq, commands, segment.path, pos, end - pos)
                pos = end
            tail = Tail(expected, segment.path, pos)
        self.tail = tail

    def _check_file_header(self, segment: Segment, data: bytes) -> str | None:
        if len(data) < FILE_HEADER_SIZE:
            return f"file header cut short ({len(data)} of {FILE_HEADER_SIZE} bytes)"
        magic, version, _flags, first_seq = _FILE_HEADER.unpack_from(data, 0)
        (crc,) = _FILE_CRC.unpack_from(data, _FILE_HEADER.size)
        if magic != FILE_MAGIC:
            return "not a Suanli journal segment (bad magic)"
        if zlib.crc32(data[: _FILE_HEADER.size]) != crc:
            return "file header checksum mismatch"
        if version not in _DECODERS:
            raise JournalCorrupt(
                segment.path,
                8,
                f"journal format version {version}; this release reads versions "
                f"{', '.join(map(str, sorted(_DECODERS)))} (written by a newer release?)",
            )
        if first_seq != segment.first_seq:
            raise JournalCorrupt(
                segment.path,
                12,
                f"header says first command {first_seq}, file name says {segment.first_seq}",
            )
        return None

    def _damage(
        self, segment: Segment, data: bytes, pos: int, problem: str, *, last: bool, repair: bool
    ) -> None:
        """Bad bytes at ``pos``: a torn tail to drop, or corruption to report."""
        if not last:
            raise JournalCorrupt(
                segment.path, pos, f"{problem} (in a segment that is not the newest)"
            )
        following = _valid_record_after(data, max(pos, FILE_HEADER_SIZE - 1))
        if following != -1:
            raise JournalCorrupt(
                segment.path, pos, f"{problem}, but a valid record follows at byte {following}"
            )
        torn = TornTail(segment.path, pos, len(data) - pos, problem)
        if repair:
            torn = _drop_tail(torn, data)
        self.torn = torn
        log.warning(
            "journal_torn_tail",
            path=str(torn.path),
            offset=torn.offset,
            bytes=torn.length,
            reason=problem,
            saved_to=str(torn.saved_to) if torn.saved_to else None,
            dropped=repair,
        )


def _drop_tail(torn: TornTail, data: bytes) -> TornTail:
    """Keep the torn bytes beside the segment, then cut them off it (or remove an empty one)."""
    saved = torn.path.with_name(f"{torn.path.name}.torn-{torn.offset}")
    _write_file(saved, data[torn.offset :])
    if torn.offset == 0:
        torn.path.unlink()
    else:
        fd = os.open(torn.path, os.O_WRONLY)
        try:
            os.ftruncate(fd, torn.offset)
            os.fsync(fd)
        finally:
            os.close(fd)
    sync_directory(torn.path.parent)
    return TornTail(torn.path, torn.offset, torn.length, torn.reason, saved)


def read_commands(directory: Path, after_seq: int = 0) -> Iterator[tuple[int, Command]]:
    """Every journalled (sequence number, command) after ``after_seq``, read-only."""
    for batch in JournalReader(directory).batches(after_seq):
        for seq, command in enumerate(batch.commands, batch.first_seq):
            if seq > after_seq:
                yield seq, command


# --- writing -------------------------------------------------------------------

# The exchange's files hold every account's orders and cash: its owner's alone.
PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def sync_directory(directory: Path) -> None:
    """Make a directory's entries (a new or renamed file) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes | bytearray) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    try:
        _write_all(fd, memoryview(data), 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def append_file(path: Path, data: bytes) -> None:
    """Append ``data`` to a file, creating it if need be, and make it durable."""
    new = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE)
    try:
        _write_all(fd, memoryview(data), os.fstat(fd).st_size)
        os.fsync(fd)
    finally:
        os.close(fd)
    if new:
        sync_directory(path.parent)


def _write_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        if written <= 0:  # pragma: no cover - pwrite raises rather than return 0
            raise OSError(errno.EIO, "short write")
        data = data[written:]
        offset += written


class Journal:
    """Appends batches to the newest segment: one write and one fsync per batch.

    Open it at the ``Tail`` a ``JournalReader`` found (``Journal.open``), so a
    torn tail is gone before the first append. ``append`` is called by one
    thread at a time (the service awaits each batch before the next).
    """

    def __init__(
        self,
        directory: Path,
        tail: Tail,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        fsync: bool = True,
    ) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.next_seq = tail.next_seq
        self.failure: BaseException | None = None
        self.batches = 0
        self.bytes_written = 0
        self._encoder = msgspec.msgpack.Encoder()
        self._fd = -1
        self._path: Path | None = None
        self._size = 0
        self._records_in_segment = 0
        if tail.path is not None:
            self._fd = os.open(tail.path, os.O_WRONLY)
            self._path = tail.path
            self._size = tail.size
            self._records_in_segment = int(tail.size > FILE_HEADER_SIZE)
            if os.fstat(self._fd).st_size != tail.size:
                raise JournalError(
                    f"{tail.path} is {os.fstat(self._fd).st_size} bytes, expected {tail.size}"
                )

    @classmethod
    def open(
        cls, directory: Path, *, segment_bytes: int = DEFAULT_SEGMENT_BYTES, fsync: bool = True
    ) -> Journal:
        """Check the newest segment, drop a torn tail, and open the journal for appending."""
        directory.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        reader = JournalReader(directory)
        for _ in reader.batches(_last_known_seq(reader), repair=True):
            pass
        assert reader.tail is not None
        return cls(directory, reader.tail, segment_bytes=segment_bytes, fsync=fsync)

    @property
    def last_seq(self) -> int:
        return self.next_seq - 1

    @property
    def path(self) -> Path | None:
        """The segment being appended to."""
        return self._path

    def append(self, first_seq: int, commands: Sequence[Command]) -> None:
        """Write the batch as one record and fsync it; raise ``JournalWriteError`` if it failed."""
        if self.failure is not None:
            raise JournalWriteError(f"journal stopped after an earlier failure: {self.failure}")
        if first_seq != self.next_seq:
            raise JournalError(f"batch starts at {first_seq}, the journal expects {self.next_seq}")
        if not commands:
            return
        record = encode_record(first_seq, commands, self._encoder)
        offset = -1
        try:
            if self._fd < 0 or (
                self._records_in_segment and self._size + len(record) > self.segment_bytes
            ):
                self._start_segment(first_seq)
            offset = self._size
            _write_all(self._fd, memoryview(record), offset)
            if self.fsync:
                _fsync(self._fd)
        except OSError as exc:
            self.failure = exc
            self._undo(offset)
            where = f"{self._path} at byte {offset}" if offset >= 0 else str(self.directory)
            log.error("journal_write_failed", where=where, error=str(exc), first_seq=first_seq)
            raise JournalWriteError(f"cannot write the journal ({where}): {exc}") from exc
        self._size = offset + len(record)
        self._records_in_segment += 1
        self.next_seq = first_seq + len(commands)
        self.batches += 1
        self.bytes_written += len(record)

    def _start_segment(self, first_seq: int) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        path = self.directory / segment_name(first_seq)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
        self._fd = fd
        self._path = path
        self._size = 0
        self._records_in_segment = 0
        header = file_header(first_seq)
        _write_all(fd, memoryview(header), 0)
        if self.fsync:
            os.fsync(fd)
            sync_directory(self.directory)
        self._size = len(header)

    def _undo(self, offset: int) -> None:
        """After a failed append: cut the segment back to where the batch began."""
        if self._fd < 0 or offset < 0:
            return
        try:
            os.ftruncate(self._fd, offset)
            os.fsync(self._fd)
        except OSError as exc:
            log.error(
                "journal_truncate_failed", path=str(self._path), offset=offset, error=str(exc)
            )

    def close(self) -> None:
        if self._fd >= 0:
            try:
                if self.fsync and self.failure is None:
                    os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = -1


def _last_known_seq(reader: JournalReader) -> int:
    """Skip decoding everything before the newest segment when only its tail matters."""
    return reader.segments[-1].first_seq - 1 if reader.segments else 0


__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "FORMAT_VERSION",
    "Batch",
    "Journal",
    "JournalCorrupt",
    "JournalError",
    "JournalReader",
    "JournalWriteError",
    "Segment",
    "Tail",
    "TornTail",
    "append_file",
    "list_segments",
    "merge_segments",
    "read_commands",
    "segment_name",
]
