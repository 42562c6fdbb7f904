"""Repository of rotating refresh tokens (stored only as SHA-256 hashes)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from shelfsync.server.domain.accounts import RefreshToken
from shelfsync.server.storage.tables import refresh_tokens

__all__ = ["RefreshTokenRepository"]


def _token(row: RowMapping) -> RefreshToken:
    return RefreshToken(
        id=row["id"],
        user_id=row["user_id"],
        family_id=row["family_id"],
        user_generation=row["user_generation"],
        issued_at=row["issued_at"],
        expires_at=row["expires_at"],
        used_at=row["used_at"],
        revoked=bool(row["revoked"]),
    )


class RefreshTokenRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add(self, token: RefreshToken, *, token_hash: str) -> None:
        self._conn.execute(
            refresh_tokens.insert().values(
                id=token.id,
                user_id=token.user_id,
                family_id=token.family_id,
                token_hash=token_hash,
                user_generation=token.user_generation,
                issued_at=token.issued_at,
                expires_at=token.expires_at,
                used_at=None,
                revoked=False,
            )
        )

    def by_hash(self, token_hash: str) -> RefreshToken | None:
        row = (
            self._conn.execute(
                sa.select(refresh_tokens).where(refresh_tokens.c.token_hash == token_hash)
            )
            .mappings()
            .first()
        )
        return _token(row) if row else None

    def spend(self, token_id: str, *, now: datetime) -> bool:
        """Mark a token used; False when it was already spent (a reuse, or a race)."""
        result = self._conn.execute(
            refresh_tokens.update()
            .where(refresh_tokens.c.id == token_id, refresh_tokens.c.used_at.is_(None))
            .values(used_at=now)
        )
        return result.rowcount == 1

    def revoke_family(self, family_id: str) -> None:
        self._conn.execute(
            refresh_tokens.update()
            .where(refresh_tokens.c.family_id == family_id)
            .values(revoked=True)
        )

    def revoke_user(self, user_id: str) -> None:
        self._conn.execute(
            refresh_tokens.update().where(refresh_tokens.c.user_id == user_id).values(revoked=True)
        )

    def purge_expired(self, *, now: datetime) -> int:
        result = self._conn.execute(
            refresh_tokens.delete().where(refresh_tokens.c.expires_at < now)
        )
        return result.rowcount
