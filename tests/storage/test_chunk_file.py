"""Chunk bodies go to disk past the page cache (O_DIRECT) where the file system
allows it, through it where it does not, and land byte for byte either way."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import pytest

from shelfsync.server.storage import blobs
from shelfsync.server.storage.blobs import BlobStore
from tests.page_cache import direct_io_works, opened_direct, resident

MIB = 1024 * 1024
SESSION = "00000000-0000-4000-8000-000000000001"


def _pieces(data: bytes, seed: int) -> list[bytes]:
    """The body cut as a socket would hand it over: uneven, most not page-sized."""
    rng = random.Random(seed)
    out, at = [], 0
    while at < len(data):
        n = rng.choice([1, 4095, 4097, 65_536, 65_537, 300_001, 2 * MIB + 3])
        out.append(data[at : at + n])
        at += n
    return out


def _write_session(store: BlobStore, data: bytes, chunk_size: int) -> None:
    store.create_session_file(SESSION, len(data))
    for index, offset in enumerate(range(0, len(data), chunk_size)):
        chunk = store.open_chunk(SESSION, offset)
        try:
            body = data[offset : offset + chunk_size]
            for piece in _pieces(body, index):
                chunk.write_pieces([piece])
            chunk.sync()
        finally:
            chunk.close()


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    """A store on a file system that takes direct I/O (else the test is skipped)."""
    if not direct_io_works(tmp_path):
        pytest.skip("this file system has no O_DIRECT")
    return BlobStore(tmp_path / "content")


def test_chunks_land_whole_and_skip_the_page_cache(store: BlobStore) -> None:
    # Three full chunks and a last one whose end is not a whole page.
    data = random.Random(7).randbytes(12 * MIB + 5_000)
    _write_session(store, data, 4 * MIB)
    path = store.session_path(SESSION)
    for offset in (0, 4 * MIB, 8 * MIB + 12_288, 12 * MIB - 4096, 12 * MIB):
        assert not resident(path, offset), offset
    # The end that is not a whole page went through the page cache, synced with the rest.
    assert resident(path, 12 * MIB + 4096)
    assert store.direct_io
    assert path.read_bytes() == data


def test_the_direct_descriptor_is_opened_with_o_direct(store: BlobStore) -> None:
    store.create_session_file(SESSION, 4 * MIB)
    chunk = store.open_chunk(SESSION, 0)
    try:
        direct = chunk._direct
        assert direct is not None
        assert opened_direct(direct)
    finally:
        chunk.close()


def test_a_file_system_without_direct_io_gets_buffered_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening with O_DIRECT fails with EINVAL (tmpfs before Linux 6.6, many
    FUSE file systems): every chunk is written through the page cache."""
    real_open = os.open

    def no_direct(path: object, flags: int, *args: int) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(blobs.os, "open", no_direct)
    store = BlobStore(tmp_path / "content")
    data = random.Random(8).randbytes(8 * MIB + 123)
    _write_session(store, data, 4 * MIB)
    assert not store.direct_io
    assert store.session_path(SESSION).read_bytes() == data


def test_a_refused_direct_write_falls_back_without_losing_bytes(
    store: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A direct write refused with EINVAL (a device whose blocks are larger
    than a page): that chunk's bytes go through the page cache, and so do
    later chunks'."""
    real_pwrite = os.pwrite
    refused: list[int] = []

    def refuse_direct(fd: int, data: memoryview, offset: int) -> int:
        if opened_direct(fd):
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(blobs.os, "pwrite", refuse_direct)
    data = random.Random(9).randbytes(8 * MIB + 4_321)
    _write_session(store, data, 4 * MIB)
    assert refused == [0]
    assert not store.direct_io
    assert store.session_path(SESSION).read_bytes() == data


def test_staging_buffers_are_reused(store: BlobStore) -> None:
    store.create_session_file(SESSION, 8 * MIB)
    first = store.open_chunk(SESSION, 0)
    stage = first._stage
    first.close()
    second = store.open_chunk(SESSION, 4 * MIB)
    try:
        assert second._stage is stage
    finally:
        second.close()


def _aligned(data: bytes) -> blobs.mmap.mmap:
    buffer = blobs.DIRECT_BUFFERS.take()
    buffer[:] = data
    return buffer


@pytest.mark.parametrize("refuse", [False, True], ids=["direct", "refused"])
def test_whole_aligned_buffers_are_written_from_where_they_are(
    store: BlobStore, monkeypatch: pytest.MonkeyPatch, refuse: bool
) -> None:
    """The chunk route's receive buffers (whole DIRECT_BUFFERS) go to disk
    without a copy into the stage when they start at a stage boundary, and
    through the stage when they do not; either way, and when the direct write
    is refused, every byte lands in order."""
    if refuse:
        real_pwrite = os.pwrite

        def refuse_direct(fd: int, data: memoryview, offset: int) -> int:
            if opened_direct(fd):
                raise OSError(errno.EINVAL, "Invalid argument")
            return real_pwrite(fd, data, offset)

        monkeypatch.setattr(blobs.os, "pwrite", refuse_direct)
    data = random.Random(10).randbytes(6 * MIB + 100)
    store.create_session_file(SESSION, len(data))
    chunk = store.open_chunk(SESSION, 0)
    try:
        chunk.write_pieces([_aligned(data[:MIB])])
        assert chunk._staged == 0  # written from the buffer itself
        chunk.write_pieces([_aligned(data[MIB : 2 * MIB])])
        chunk.write_pieces([data[2 * MIB : 2 * MIB + 100]])
        # Off a stage boundary now: this one is staged like any piece.
        chunk.write_pieces([_aligned(data[2 * MIB + 100 : 3 * MIB + 100])])
        chunk.write_pieces([data[3 * MIB + 100 : 4 * MIB]])
        chunk.write_pieces([_aligned(data[4 * MIB : 5 * MIB])])
        chunk.write_pieces([_aligned(data[5 * MIB : 6 * MIB]), data[6 * MIB :]])
        chunk.sync()
    finally:
        chunk.close()
    assert store.direct_io is not refuse
    assert store.session_path(SESSION).read_bytes() == data
