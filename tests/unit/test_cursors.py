"""Feed cursors: opaque, tamper-evident, bound to one library (protocol section 6)."""

from __future__ import annotations

import base64
import uuid

import pytest

from shelfsync.server.domain.errors import InvalidCursor
from shelfsync.server.services.cursors import Cursor, CursorCodec

SECRET = b"s" * 32
USER = str(uuid.UUID(int=1))
OTHER_USER = str(uuid.UUID(int=2))


@pytest.fixture
def codec() -> CursorCodec:
    return CursorCodec(SECRET)


def _raw(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _text(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param(Cursor(USER, 0), id="start"),
        pytest.param(Cursor(USER, 42), id="position"),
        pytest.param(Cursor(USER, 7, snapshot_seq=99), id="first-listing-in-progress"),
        pytest.param(Cursor(USER, 2**63 - 1), id="huge-seq"),
    ],
)
def test_cursor_round_trips(codec: CursorCodec, cursor: Cursor) -> None:
    text = codec.encode(cursor)
    assert codec.decode(text, user_id=USER) == cursor


def test_cursor_text_is_url_safe(codec: CursorCodec) -> None:
    text = codec.encode(Cursor(USER, 2**40 + 12345, snapshot_seq=2**41))
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@pytest.mark.parametrize(
    "index",
    [
        pytest.param(0, id="version"),
        pytest.param(8, id="seq"),
        pytest.param(16, id="snapshot-seq"),
        pytest.param(20, id="library"),
        pytest.param(-1, id="mac"),
    ],
)
def test_tampered_byte_is_invalid(codec: CursorCodec, index: int) -> None:
    raw = bytearray(_raw(codec.encode(Cursor(USER, 5))))
    raw[index] ^= 0x01
    with pytest.raises(InvalidCursor):
        codec.decode(_text(bytes(raw)), user_id=USER)


def test_truncated_cursor_is_invalid(codec: CursorCodec) -> None:
    text = codec.encode(Cursor(USER, 5))
    with pytest.raises(InvalidCursor):
        codec.decode(text[:-4], user_id=USER)


def test_another_users_cursor_is_invalid(codec: CursorCodec) -> None:
    text = codec.encode(Cursor(OTHER_USER, 5))
    with pytest.raises(InvalidCursor):
        codec.decode(text, user_id=USER)


def test_cursor_from_another_server_is_invalid(codec: CursorCodec) -> None:
    text = CursorCodec(b"another secret, another server!!").encode(Cursor(USER, 5))
    with pytest.raises(InvalidCursor):
        codec.decode(text, user_id=USER)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("latest", id="word"),
        pytest.param("!!!!", id="not-base64"),
        pytest.param("é" * 10, id="not-ascii"),
        pytest.param("A", id="one-character"),
        pytest.param(_text(b"\x00" * 45), id="zeros-of-the-right-length"),
        pytest.param("A" * 201, id="too-long"),
    ],
)
def test_garbage_is_invalid(codec: CursorCodec, text: str) -> None:
    with pytest.raises(InvalidCursor):
        codec.decode(text, user_id=USER)


def test_cursor_with_extra_bytes_is_invalid(codec: CursorCodec) -> None:
    raw = _raw(codec.encode(Cursor(USER, 5)))
    with pytest.raises(InvalidCursor):
        codec.decode(_text(raw + b"\x00"), user_id=USER)
