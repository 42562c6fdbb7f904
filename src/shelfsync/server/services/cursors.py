"""Feed cursors: opaque to clients, tamper-evident, bound to one library.

Layout (before base64url): version (1 byte), seq (8), snapshot_seq (8),
library/user id (16), then the first 12 bytes of an HMAC-SHA256 over those.
`snapshot_seq` > seq marks a first listing still in progress: tombstones at or
below it predate the device and are skipped.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
import uuid
from dataclasses import dataclass

from shelfsync.server.domain.errors import InvalidCursor

__all__ = ["Cursor", "CursorCodec"]

_VERSION = 1
_LAYOUT = struct.Struct(">BQQ16s")
_MAC_BYTES = 12
_MAX_TEXT = 200


@dataclass(frozen=True, slots=True)
class Cursor:
    user_id: str
    seq: int
    snapshot_seq: int = 0


class CursorCodec:
    def __init__(self, secret: bytes) -> None:
        # A key of its own, so a cursor MAC can never double as a token signature.
        self._key = hmac.new(secret, b"shelfsync feed cursor v1", hashlib.sha256).digest()

    def encode(self, cursor: Cursor) -> str:
        payload = _LAYOUT.pack(
            _VERSION, cursor.seq, cursor.snapshot_seq, uuid.UUID(cursor.user_id).bytes
        )
        mac = hmac.new(self._key, payload, hashlib.sha256).digest()[:_MAC_BYTES]
        return base64.urlsafe_b64encode(payload + mac).rstrip(b"=").decode("ascii")

    def decode(self, text: str, *, user_id: str) -> Cursor:
        if not text or len(text) > _MAX_TEXT:
            raise InvalidCursor("malformed cursor")
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError) as exc:
            raise InvalidCursor("malformed cursor") from exc
        if len(raw) != _LAYOUT.size + _MAC_BYTES:
            raise InvalidCursor("malformed cursor")
        payload, mac = raw[: _LAYOUT.size], raw[_LAYOUT.size :]
        expected = hmac.new(self._key, payload, hashlib.sha256).digest()[:_MAC_BYTES]
        if not hmac.compare_digest(mac, expected):
            raise InvalidCursor("the cursor was not issued by this server")
        version, seq, snapshot_seq, owner = _LAYOUT.unpack(payload)
        if version != _VERSION:
            raise InvalidCursor("unsupported cursor version")
        if str(uuid.UUID(bytes=owner)) != user_id:
            raise InvalidCursor("the cursor belongs to another library")
        return Cursor(user_id=user_id, seq=seq, snapshot_seq=snapshot_seq)
