"""Whole-file downloads of large content that is not in the page cache are read
past it (O_DIRECT), and arrive byte for byte whatever the file system allows."""

from __future__ import annotations

import errno
import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from shelfsync.content_hash import hash_bytes
from shelfsync.server.api import file_responses
from shelfsync.server.api.file_responses import DIRECT_READ_MIN_BYTES
from shelfsync.server.storage.blobs import BlobStore
from tests.api.test_download import Library, make_library, url
from tests.page_cache import direct_io_works, drop, opened_direct, resident

__all__ = ["make_library"]  # the fixture, imported for pytest

MIB = 1024 * 1024
# Past the threshold, ending inside a page: the last piece is a short read.
BIG = random.Random(11).randbytes(DIRECT_READ_MIN_BYTES + MIB + 5_000)


@pytest.fixture
def lib(make_library: Callable[[str], Library]) -> Library:
    return make_library("alice")


def _object(lib: Library, data: bytes, name: str) -> Path:
    lib.put(name, data)
    blobs: BlobStore = lib.app.state.services.blobs
    path = blobs.object_path(hash_bytes(data))
    drop(path)
    if resident(path, 0):
        pytest.skip("this file system keeps no page cache state to test against")
    return path


def test_a_large_file_not_in_the_cache_is_read_past_it(lib: Library) -> None:
    path = _object(lib, BIG, "film.mkv")
    if not direct_io_works(path):
        pytest.skip("this file system has no O_DIRECT")
    response = lib.client.get(url("film.mkv"), headers=lib.headers)
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(BIG))
    assert response.content == BIG
    # Read past the page cache: none of it is there now.
    for offset in (0, MIB, len(BIG) - 5_000, len(BIG) - 1):
        assert not resident(path, offset), offset


def test_a_second_request_is_read_through_the_cache(lib: Library) -> None:
    """The first request for a file says little; the second says it is wanted
    again, and from then on it is read through the cache, which keeps it."""
    path = _object(lib, BIG, "film.mkv")
    if not direct_io_works(path):
        pytest.skip("this file system has no O_DIRECT")
    first = lib.client.get(url("film.mkv"), headers=lib.headers)
    assert first.content == BIG
    assert not resident(path, MIB)
    second = lib.client.get(url("film.mkv"), headers=lib.headers)
    assert second.content == BIG
    assert resident(path, 0)
    assert resident(path, len(BIG) - 1)


def test_a_large_file_in_the_cache_is_read_from_it(lib: Library) -> None:
    path = _object(lib, BIG, "film.mkv")
    assert path.read_bytes() == BIG  # now cached
    response = lib.client.get(url("film.mkv"), headers=lib.headers)
    assert response.status_code == 200
    assert response.content == BIG
    assert resident(path, 0)
    assert resident(path, len(BIG) - 1)


def test_a_file_under_the_threshold_goes_through_the_cache(lib: Library) -> None:
    small = BIG[: DIRECT_READ_MIN_BYTES - 1]
    path = _object(lib, small, "clip.mp4")
    response = lib.client.get(url("clip.mp4"), headers=lib.headers)
    assert response.content == small
    assert resident(path, 0)


def test_head_of_a_large_file_sends_no_body(lib: Library) -> None:
    _object(lib, BIG, "film.mkv")
    response = lib.client.head(url("film.mkv"), headers=lib.headers)
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(BIG))
    assert response.content == b""


def test_a_refused_direct_read_goes_on_through_the_cache(
    lib: Library, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A direct read refused with EINVAL (blocks larger than a page): the rest
    is read through the page cache, and the body is still whole."""
    path = _object(lib, BIG, "film.mkv")
    if not direct_io_works(path):
        pytest.skip("this file system has no O_DIRECT")
    real_preadv = os.preadv
    refused: list[int] = []

    def refuse_second_direct_read(fd: int, buffers: list[memoryview], offset: int) -> int:
        if opened_direct(fd) and offset > 0:
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_preadv(fd, buffers, offset)

    real_nowait = real_preadv

    def preadv(fd: int, buffers: list[memoryview], offset: int, *flags: int) -> int:
        if flags:  # the cache probe (RWF_NOWAIT)
            return real_nowait(fd, buffers, offset, *flags)
        return refuse_second_direct_read(fd, buffers, offset)

    monkeypatch.setattr(file_responses.os, "preadv", preadv)
    response = lib.client.get(url("film.mkv"), headers=lib.headers)
    assert response.content == BIG
    assert refused == [file_responses.READ_PIECE_BYTES]


def test_without_direct_io_the_file_is_read_through_the_cache(
    lib: Library, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system that refuses O_DIRECT at open (tmpfs before Linux 6.6)."""
    path = _object(lib, BIG, "film.mkv")
    real_open: Callable[..., int] = os.open

    def no_direct(target: object, flags: int, *args: int) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(target, flags, *args)

    monkeypatch.setattr(file_responses.os, "open", no_direct)
    response = lib.client.get(url("film.mkv"), headers=lib.headers)
    assert response.content == BIG
    assert resident(path, 0)


def test_a_short_direct_read_goes_on_through_the_cache(
    lib: Library, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A direct read that returns less than asked, ending inside a page (the
    kernel may): the next offset cannot be read directly, so the rest is read
    through the page cache, and the body is still whole."""
    path = _object(lib, BIG, "film.mkv")
    if not direct_io_works(path):
        pytest.skip("this file system has no O_DIRECT")
    real_preadv = os.preadv
    short: list[int] = []

    def preadv(fd: int, buffers: list[memoryview], offset: int, *flags: int) -> int:
        if opened_direct(fd) and not short:
            short.append(offset)
            real_preadv(fd, buffers, offset, *flags)
            return 1000  # as if the kernel had stopped there
        return real_preadv(fd, buffers, offset, *flags)

    monkeypatch.setattr(file_responses.os, "preadv", preadv)
    response = lib.client.get(url("film.mkv"), headers=lib.headers)
    assert response.content == BIG
    assert short == [0]
