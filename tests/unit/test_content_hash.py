"""`shelfsync.content_hash` against an independent implementation: rclone's dropbox hash."""

from __future__ import annotations

import io
import itertools
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from shelfsync.content_hash import (
    BLOCK_SIZE,
    EMPTY_HASH,
    ContentHasher,
    hash_bytes,
    hash_file,
    hash_stream,
    is_content_hash,
)

MIB = 1024 * 1024
SIZES = [0, 1, 4 * MIB - 1, 4 * MIB, 4 * MIB + 1, 9 * MIB + 123]
# Odd piece sizes that straddle block boundaries in every way.
PIECES = [4093, 65_537, BLOCK_SIZE - 1, BLOCK_SIZE + 3]


def _content(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def _rclone_dropbox_hash(path: Path) -> str:
    rclone = shutil.which("rclone")
    if rclone is None:
        pytest.fail("rclone is not installed: run `make sysdeps`")
    done = subprocess.run(
        [rclone, "hashsum", "dropbox", str(path)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # "<hash>  <name>"
    return done.stdout.split()[0]


@pytest.mark.parametrize("size", SIZES)
def test_file_hash_agrees_with_rclone(tmp_path: Path, size: int) -> None:
    path = tmp_path / f"content-{size}.bin"
    path.write_bytes(_content(size))
    expected = _rclone_dropbox_hash(path)
    assert is_content_hash(expected)
    assert hash_file(path) == expected
    assert hash_bytes(path.read_bytes()) == expected


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("piece", PIECES)
def test_streaming_in_odd_pieces_gives_the_same_digest(size: int, piece: int) -> None:
    data = _content(size)
    hasher = ContentHasher()
    for start in range(0, len(data), piece):
        hasher.update(memoryview(data)[start : start + piece])
    assert hasher.size == size
    assert hasher.hexdigest() == hash_bytes(data)
    assert hash_stream(io.BytesIO(data), read_size=piece).hexdigest() == hash_bytes(data)


@pytest.mark.parametrize("size", SIZES)
def test_streaming_in_random_pieces_and_single_bytes_at_block_edges(size: int) -> None:
    data = _content(size)
    cuts = {0, size}
    rng = random.Random(size + 1)
    position = 0
    while position < size:
        position += rng.randint(1, 300_000)
        cuts.add(min(position, size))
    for edge in range(BLOCK_SIZE, size + 1, BLOCK_SIZE):
        # one-byte pieces right around every block boundary
        cuts.update(range(max(edge - 3, 0), min(edge + 4, size + 1)))
    bounds = sorted(cuts)
    hasher = ContentHasher()
    for start, end in itertools.pairwise(bounds):
        hasher.update(data[start:end])
    assert hasher.hexdigest() == hash_bytes(data)


@pytest.mark.parametrize("size", SIZES)
def test_block_digests_cover_whole_blocks_then_the_rest(size: int) -> None:
    hasher = hash_stream(io.BytesIO(_content(size)), read_size=65_537)
    assert len(hasher.block_digests) == -(-size // BLOCK_SIZE)


def test_empty_content_hashes_to_sha256_of_nothing() -> None:
    assert hash_bytes(b"") == EMPTY_HASH
    assert EMPTY_HASH == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
