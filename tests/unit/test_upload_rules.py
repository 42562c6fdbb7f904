"""The pure upload rules (protocol section 9): chunk sizing and Content-Digest."""

from __future__ import annotations

import base64
import hashlib

import pytest

from shelfsync.server.domain.errors import InvalidInput
from shelfsync.server.domain.uploads import (
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    MAX_CHUNKS,
    MIN_CHUNK_SIZE,
    chunk_count,
    chunk_length,
    plan_chunk_size,
)
from shelfsync.server.services.uploads import parse_content_digest

MIB = 1024 * 1024


@pytest.mark.parametrize(
    ("size", "requested", "expected"),
    [
        # Defaults.
        pytest.param(0, None, 8 * MIB, id="empty-default"),
        pytest.param(1, None, 8 * MIB, id="tiny-default"),
        pytest.param(10 * MIB, None, 8 * MIB, id="default"),
        # Clamped up to 4 MiB, down to 64 MiB, rounded up to a multiple of 4 MiB.
        pytest.param(10 * MIB, 1, 4 * MIB, id="one-byte-up-to-min"),
        pytest.param(10 * MIB, 3 * MIB, 4 * MIB, id="below-min"),
        pytest.param(10 * MIB, 4 * MIB, 4 * MIB, id="exact-min"),
        pytest.param(10 * MIB, 4 * MIB + 1, 8 * MIB, id="round-up-one-byte"),
        pytest.param(10 * MIB, 5 * MIB, 8 * MIB, id="round-up-5"),
        pytest.param(10 * MIB, 12 * MIB, 12 * MIB, id="multiple-kept"),
        pytest.param(10 * MIB, 63 * MIB, 64 * MIB, id="round-up-to-max"),
        pytest.param(10 * MIB, 64 * MIB, 64 * MIB, id="exact-max"),
        pytest.param(10 * MIB, 65 * MIB, 64 * MIB, id="above-max"),
        pytest.param(10 * MIB, 2**40, 64 * MIB, id="huge-request"),
        # Raised so that there are at most 10,000 chunks.
        pytest.param(MAX_CHUNKS * 8 * MIB, None, 8 * MIB, id="exactly-10000-default"),
        pytest.param(MAX_CHUNKS * 8 * MIB + 1, None, 12 * MIB, id="10001-raised"),
        pytest.param(MAX_CHUNKS * 4 * MIB + 1, 4 * MIB, 8 * MIB, id="min-raised"),
        pytest.param(MAX_CHUNKS * 20 * MIB, 4 * MIB, 20 * MIB, id="raised-to-20"),
        pytest.param(MAX_CHUNKS * 20 * MIB + 1, 4 * MIB, 24 * MIB, id="raised-to-24"),
        pytest.param(MAX_CHUNKS * 8 * MIB + 1, 32 * MIB, 32 * MIB, id="large-request-kept"),
        pytest.param(MAX_CHUNKS * 64 * MIB, None, 64 * MIB, id="largest-possible"),
        # Too big even for 10,000 chunks of 64 MiB.
        pytest.param(MAX_CHUNKS * 64 * MIB + 1, None, None, id="too-big"),
        pytest.param(MAX_CHUNKS * 64 * MIB + 1, 64 * MIB, None, id="too-big-max-request"),
        pytest.param(2**53, None, None, id="way-too-big"),
    ],
)
def test_plan_chunk_size(size: int, requested: int | None, expected: int | None) -> None:
    planned = plan_chunk_size(size=size, requested=requested)
    assert planned == expected
    if planned is not None:
        assert planned % (4 * MIB) == 0
        assert MIN_CHUNK_SIZE <= planned <= MAX_CHUNK_SIZE
        assert chunk_count(size=size, chunk_size=planned) <= MAX_CHUNKS


def test_chunk_size_constants() -> None:
    assert (MIN_CHUNK_SIZE, DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE) == (4 * MIB, 8 * MIB, 64 * MIB)
    assert MAX_CHUNKS == 10_000


@pytest.mark.parametrize(
    ("size", "chunk_size", "expected"),
    [
        (0, 4 * MIB, 0),
        (1, 4 * MIB, 1),
        (4 * MIB - 1, 4 * MIB, 1),
        (4 * MIB, 4 * MIB, 1),
        (4 * MIB + 1, 4 * MIB, 2),
        (10 * MIB, 4 * MIB, 3),
        (12 * MIB, 4 * MIB, 3),
        (12 * MIB, 8 * MIB, 2),
        (MAX_CHUNKS * 8 * MIB, 8 * MIB, MAX_CHUNKS),
    ],
)
def test_chunk_count(size: int, chunk_size: int, expected: int) -> None:
    assert chunk_count(size=size, chunk_size=chunk_size) == expected


@pytest.mark.parametrize(
    ("size", "chunk_size", "index", "expected"),
    [
        (10 * MIB, 4 * MIB, 0, 4 * MIB),
        (10 * MIB, 4 * MIB, 1, 4 * MIB),
        (10 * MIB, 4 * MIB, 2, 2 * MIB),  # the last one holds the remainder
        (10 * MIB, 4 * MIB, 3, 0),  # past the end
        (12 * MIB, 4 * MIB, 2, 4 * MIB),  # an exact multiple: the last is whole
        (1, 4 * MIB, 0, 1),
        (0, 4 * MIB, 0, 0),
        (12 * MIB + 7, 8 * MIB, 1, 4 * MIB + 7),
    ],
)
def test_chunk_length(size: int, chunk_size: int, index: int, expected: int) -> None:
    assert chunk_length(size=size, chunk_size=chunk_size, index=index) == expected


@pytest.mark.parametrize(
    ("size", "chunk_size"),
    [(1, 4 * MIB), (10 * MIB, 4 * MIB), (12 * MIB, 4 * MIB), (12 * MIB + 7, 8 * MIB)],
)
def test_chunk_lengths_add_up(size: int, chunk_size: int) -> None:
    count = chunk_count(size=size, chunk_size=chunk_size)
    lengths = [chunk_length(size=size, chunk_size=chunk_size, index=i) for i in range(count)]
    assert sum(lengths) == size
    assert all(length == chunk_size for length in lengths[:-1])
    assert 0 < lengths[-1] <= chunk_size


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


DIGEST = hashlib.sha256(b"chunk").digest()
SHA512 = hashlib.sha512(b"chunk").digest()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(None, None, id="absent"),
        pytest.param(f"sha-256=:{_b64(DIGEST)}:", DIGEST, id="valid"),
        pytest.param(f"  sha-256=:{_b64(DIGEST)}:  ", DIGEST, id="surrounding-space"),
        pytest.param(f"sha-512=:{_b64(SHA512)}:, sha-256=:{_b64(DIGEST)}:", DIGEST, id="second"),
        pytest.param(f"sha-256=:{_b64(DIGEST)}:,sha-512=:{_b64(SHA512)}:", DIGEST, id="first"),
        pytest.param(f"sha-512=:{_b64(SHA512)}:", None, id="sha-512-only"),
        pytest.param(f"unixsum=:{_b64(b'1234')}:, md5=:{_b64(b'x' * 16)}:", None, id="others"),
        pytest.param("", None, id="empty"),
    ],
)
def test_parse_content_digest(header: str | None, expected: bytes | None) -> None:
    assert parse_content_digest(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("sha-256=:!!notbase64!!:", id="bad-characters"),
        pytest.param("sha-256=:abc:", id="bad-padding"),
        pytest.param("sha-256=:a=bc:", id="padding-inside"),
        pytest.param(f"sha-256=:{_b64(DIGEST[:16])}:", id="too-short"),
        pytest.param(f"sha-256=:{_b64(SHA512)}:", id="too-long"),
        pytest.param(f"sha-256={_b64(DIGEST)}", id="no-colons"),
        pytest.param(f"sha-512=:{_b64(SHA512)}:, sha-256=:{_b64(b'')}:", id="empty-value"),
    ],
)
def test_parse_content_digest_rejects(header: str) -> None:
    with pytest.raises(InvalidInput):
        parse_content_digest(header)
