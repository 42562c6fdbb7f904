"""client/upload.py's chunk size: the protocol's bounds, and larger chunks for larger files."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shelfsync.client.upload import _chunk_size
from shelfsync.content_hash import BLOCK_SIZE

MIB = 1024 * 1024


@pytest.mark.parametrize(
    ("size", "chunk"),
    [
        (8 * MIB, None),  # sent whole
        (8 * MIB + 1, 4 * MIB),
        (128 * MIB - 1, 4 * MIB),
        (128 * MIB, 16 * MIB),
        (300 * MIB, 16 * MIB),
        (512 * MIB, 32 * MIB),
        (1024 * MIB, 64 * MIB),
        (40 * 1024 * MIB, 64 * MIB),
    ],
)
def test_chunk_sizes(size: int, chunk: int | None) -> None:
    assert _chunk_size(size) == chunk


@given(st.integers(min_value=8 * MIB + 1, max_value=1 << 40))
def test_every_chunk_size_is_one_the_protocol_allows(size: int) -> None:
    chunk = _chunk_size(size)
    assert chunk is not None
    # protocol.md: a multiple of 4 MiB from 4 to 64 MiB.
    assert chunk % BLOCK_SIZE == 0
    assert 4 * MIB <= chunk <= 64 * MIB
    # A file of multi-block chunks keeps at least 8 until the largest is reached.
    if size >= 128 * MIB and chunk < 64 * MIB:
        assert -(-size // chunk) >= 8
