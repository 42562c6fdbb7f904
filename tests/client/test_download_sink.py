"""download_sink.py: a download's bytes land whole and in place whichever way
they go out (direct writes of full buffers, a buffered tail, buffered writes
throughout where direct ones are refused), and buffered ones hand their pages
back as they go."""

from __future__ import annotations

import errno
import fcntl
import itertools
import os
import random
from pathlib import Path

import pytest

from shelfsync.client import download_sink
from shelfsync.client.download_sink import BUFFER_BYTES, DIRECT_IO, DownloadSink

MIB = 1024 * 1024
DATA = random.Random(11).randbytes(5 * MIB + 12_345)

needs_direct = pytest.mark.skipif(not DIRECT_IO, reason="no O_DIRECT on this system")


class Writes:
    """Every pwrite: (direct?, offset, length)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, refuse_direct: bool = False) -> None:
        self.seen: list[tuple[bool, int, int]] = []
        pwrite = os.pwrite

        def spy(fd: int, data: memoryview, offset: int) -> int:
            direct = _is_direct(fd)
            self.seen.append((direct, offset, len(data)))
            if direct and refuse_direct:
                raise OSError(errno.EINVAL, "Invalid argument")
            return pwrite(fd, data, offset)

        monkeypatch.setattr(os, "pwrite", spy)


def _is_direct(fd: int) -> bool:
    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & getattr(os, "O_DIRECT", 0))


def _fill(path: Path, data: bytes, offset: int, *, pieces: list[int] | None = None) -> bool:
    """Write data[offset:] through a sink (through its buffer when `pieces` is
    None, else with write() in those sizes, cycled); True when it went direct."""
    with DownloadSink(path, offset) as sink:
        rest = memoryview(data)[offset:]
        if pieces is None:
            while rest:
                space = sink.space()
                got = min(len(space), len(rest), 300_001)  # like a socket: any amount
                space[:got] = rest[:got]
                rest = rest[got:]
                sink.filled(got)
        else:
            for size in itertools.cycle(pieces):
                if not rest:
                    break
                sink.write(rest[:size])
                rest = rest[size:]
        direct = sink.direct
        sink.finish()
    return direct


@pytest.mark.parametrize("size", [0, 1, 4095, BUFFER_BYTES, BUFFER_BYTES + 1, len(DATA)])
@pytest.mark.parametrize("pieces", [None, [1, 65_536, 3 * MIB]])
def test_the_bytes_land_whole_whatever_their_size_and_pieces(
    tmp_path: Path, size: int, pieces: list[int] | None
) -> None:
    target = tmp_path / "part"
    _fill(target, DATA[:size], 0, pieces=pieces)
    assert target.read_bytes() == DATA[:size]


@pytest.mark.parametrize("offset", [0, 4096, 3 * MIB, 3 * MIB + 7])
def test_a_resumed_download_keeps_what_was_there_and_cuts_what_follows(
    tmp_path: Path, offset: int
) -> None:
    target = tmp_path / "part"
    target.write_bytes(DATA[:offset] + b"stale bytes past the offset")
    _fill(target, DATA, offset)
    assert target.read_bytes() == DATA


@needs_direct
def test_full_buffers_go_direct_at_aligned_offsets_and_the_tail_buffered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = Writes(monkeypatch)
    target = tmp_path / "part"
    target.write_bytes(DATA[: 2 * MIB])
    assert _fill(target, DATA, 2 * MIB)
    assert target.read_bytes() == DATA
    *full, tail = writes.seen
    assert full == [(True, offset, BUFFER_BYTES) for offset in range(2 * MIB, 5 * MIB, MIB)]
    assert tail == (False, 5 * MIB, 12_345)


def test_an_offset_out_of_page_alignment_writes_buffered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = Writes(monkeypatch)
    target = tmp_path / "part"
    target.write_bytes(DATA[:4097])
    assert not _fill(target, DATA, 4097)
    assert target.read_bytes() == DATA
    assert not any(direct for direct, _, _ in writes.seen)


@needs_direct
def test_a_filesystem_refusing_direct_writes_gets_buffered_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = Writes(monkeypatch, refuse_direct=True)
    target = tmp_path / "part"
    assert not _fill(target, DATA, 0)  # refused at the first write: buffered since
    assert target.read_bytes() == DATA
    assert [direct for direct, _, _ in writes.seen] == [True] + [False] * 6


def test_a_filesystem_refusing_direct_opens_gets_buffered_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def refuse(path: str, flags: int, mode: int = 0o777) -> int:
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", refuse)
    target = tmp_path / "part"
    assert not _fill(target, DATA, 0)
    assert target.read_bytes() == DATA


@pytest.mark.parametrize("offset", [0, 3 * MIB + 7])
def test_buffered_writes_hand_their_pages_back_as_they_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offset: int
) -> None:
    """Every DROP_EVERY_BYTES the bytes written are synced and their pages
    dropped, in order and without gaps, and the whole file at the end."""
    monkeypatch.setattr(download_sink, "DIRECT_IO", False)
    monkeypatch.setattr(download_sink, "DROP_EVERY_BYTES", 2 * MIB)
    events: list[tuple[str, int, int]] = []
    fdatasync, fsync, fadvise = os.fdatasync, os.fsync, os.posix_fadvise
    monkeypatch.setattr(os, "fdatasync", lambda fd: (events.append(("sync", 0, 0)), fdatasync(fd)))
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("sync", 0, 0)), fsync(fd)))

    def drop(fd: int, start: int, length: int, advice: int) -> None:
        assert advice == os.POSIX_FADV_DONTNEED
        events.append(("drop", start, length))
        fadvise(fd, start, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", drop)
    data = DATA + DATA  # 10 MiB and more
    target = tmp_path / "part"
    target.write_bytes(data[:offset])
    assert not _fill(target, data, offset)
    assert target.read_bytes() == data
    drops = [(start, length) for kind, start, length in events if kind == "drop"]
    assert drops[-1] == (0, 0)  # the whole file, last
    assert events[-2][0] == "sync"
    ranges = drops[:-1]
    assert len(ranges) > 1
    assert ranges[0][0] == offset
    for _, length in ranges:  # a range ends with the buffer that filled it
        assert 2 * MIB <= length < 2 * MIB + BUFFER_BYTES
    for (start, length), (next_start, _) in itertools.pairwise(ranges):
        assert next_start == start + length
    last_start, last_length = ranges[-1]
    assert len(data) - (last_start + last_length) < 2 * MIB
    for index, event in enumerate(events):
        if event[0] == "drop":
            assert events[index - 1][0] == "sync"  # synced first: clean pages go


def test_closing_with_a_view_of_the_buffer_still_alive_raises_nothing(tmp_path: Path) -> None:
    target = tmp_path / "part"
    with DownloadSink(target, 0) as sink:
        held = sink.space()[:10]  # as a traceback's frame may hold one
        held[:] = b"0123456789"
        sink.filled(10)
    del held
    assert target.stat().st_size == 0  # not finished: nothing promised


def test_a_resumed_download_whose_file_is_gone_is_not_started_afresh(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        DownloadSink(tmp_path / "gone", 3 * MIB)
    assert not (tmp_path / "gone").exists()
