"""Logging in, refreshing, device tokens, and turning a bearer token into a Principal."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from shelfsync.server.domain.accounts import Device, RefreshToken, User
from shelfsync.server.domain.clock import utcnow
from shelfsync.server.domain.errors import (
    AuthenticationFailed,
    DeviceForbidden,
    DeviceRequired,
    LoginThrottled,
)
from shelfsync.server.services.passwords import MAX_PASSWORD_BYTES, PasswordHasher
from shelfsync.server.services.tokens import (
    AccessClaims,
    TokenIssuer,
    hash_opaque,
    new_opaque_token,
)
from shelfsync.server.storage.access import DeviceAccess
from shelfsync.server.storage.devices import DeviceRepository
from shelfsync.server.storage.engine import Database
from shelfsync.server.storage.refresh_tokens import RefreshTokenRepository
from shelfsync.server.storage.throttle import ThrottleRepository, ThrottleState
from shelfsync.server.storage.users import UserRepository

__all__ = ["AuthService", "DeviceGrant", "LoginPolicy", "Principal", "TokenPair"]

_BAD_CREDENTIALS = "invalid username or password"
# last_seen_at is a display value: writing it on every request would turn every
# read into a write, so it is refreshed at most this often.
_SEEN_RESOLUTION = timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in_s: int


@dataclass(frozen=True, slots=True)
class DeviceGrant:
    access_token: str
    expires_in_s: int
    device_id: str


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts for: a user, and the device bound to its token if any."""

    user: User
    device: Device | None

    @property
    def user_id(self) -> str:
        return self.user.id


@dataclass(frozen=True, slots=True)
class LoginPolicy:
    max_failures: int
    window_s: int
    block_s: int
    refresh_ttl_s: int


class AuthService:
    def __init__(
        self,
        *,
        db: Database,
        passwords: PasswordHasher,
        tokens: TokenIssuer,
        policy: LoginPolicy,
    ) -> None:
        self._db = db
        self._passwords = passwords
        self._tokens = tokens
        self._policy = policy

    # -- login -------------------------------------------------------------

    def login(self, *, username: str, password: str, client_ip: str) -> TokenPair:
        now = utcnow()
        keys = (f"user:{username.casefold()[:150]}", f"ip:{client_ip[:150]}")
        limits = (self._policy.max_failures, self._policy.max_failures * 4)
        with self._db.read() as conn:
            throttle = ThrottleRepository(conn)
            for key in keys:
                self._check_not_blocked(throttle.get(key), now)
            user = UserRepository(conn).by_username(username)
        too_long = len(password.encode("utf-8", "surrogatepass")) > MAX_PASSWORD_BYTES
        # The hash is checked even for an unknown user, so timing tells nothing.
        ok = self._passwords.verify(None if user is None else user.password_hash, password)
        if not ok or too_long or user is None:
            with self._db.write() as conn:
                throttle = ThrottleRepository(conn)
                for key, limit in zip(keys, limits, strict=True):
                    self._record_failure(throttle, key, limit, now)
            raise AuthenticationFailed(_BAD_CREDENTIALS)
        with self._db.write() as conn:
            ThrottleRepository(conn).clear(keys[0])
            if self._passwords.needs_rehash(user.password_hash):
                UserRepository(conn).rehash(
                    user_id=user.id, password_hash=self._passwords.hash(password)
                )
            refresh = self._new_refresh(
                conn_tokens=RefreshTokenRepository(conn),
                user=user,
                family_id=str(uuid.uuid4()),
                now=now,
            )
        return TokenPair(self._access_for(user, now), refresh, self._tokens.access_ttl_s)

    def _check_not_blocked(self, state: ThrottleState | None, now: datetime) -> None:
        if state is not None and state.blocked_until is not None and state.blocked_until > now:
            wait_s = math.ceil((state.blocked_until - now).total_seconds())
            raise LoginThrottled(
                "too many failed logins, try again later", retry_after_s=max(wait_s, 1)
            )

    def _record_failure(
        self, throttle: ThrottleRepository, key: str, limit: int, now: datetime
    ) -> None:
        window = timedelta(seconds=self._policy.window_s)
        state = throttle.lock(key, now=now)
        if state.window_started_at + window < now:
            state = ThrottleState(0, now, None)
        failures = state.failures + 1
        blocked = state.blocked_until
        if failures >= limit:
            blocked = now + timedelta(seconds=self._policy.block_s)
        throttle.put(key, ThrottleState(failures, state.window_started_at, blocked))

    # -- refresh -----------------------------------------------------------

    def refresh(self, *, refresh_token: str) -> TokenPair:
        now = utcnow()
        digest = hash_opaque(refresh_token)
        with self._db.write() as conn:
            repo = RefreshTokenRepository(conn)
            token = repo.by_hash(digest)
            if token is None or token.revoked or token.expires_at <= now:
                raise AuthenticationFailed("the refresh token is invalid or expired")
            if not repo.spend(token.id, now=now):
                # A spent token presented again means it leaked: end the chain.
                repo.revoke_family(token.family_id)
                reuse = True
            else:
                reuse = False
            user = UserRepository(conn).by_id(token.user_id)
            if not reuse and user is not None and user.generation == token.user_generation:
                new_refresh = self._new_refresh(
                    conn_tokens=repo, user=user, family_id=token.family_id, now=now
                )
            else:
                new_refresh = None
        # Raised after the block so the revocation above is committed.
        if new_refresh is None or user is None:
            raise AuthenticationFailed("the refresh token is invalid or expired")
        return TokenPair(self._access_for(user, now), new_refresh, self._tokens.access_ttl_s)

    def _new_refresh(
        self, *, conn_tokens: RefreshTokenRepository, user: User, family_id: str, now: datetime
    ) -> str:
        token, digest = new_opaque_token("ssr")
        conn_tokens.add(
            RefreshToken(
                id=str(uuid.uuid4()),
                user_id=user.id,
                family_id=family_id,
                user_generation=user.generation,
                issued_at=now,
                expires_at=now + timedelta(seconds=self._policy.refresh_ttl_s),
                used_at=None,
                revoked=False,
            ),
            token_hash=digest,
        )
        return token

    def _access_for(self, user: User, now: datetime) -> str:
        return self._tokens.issue_access(user_id=user.id, user_generation=user.generation, now=now)

    # -- devices -----------------------------------------------------------

    def device_login(self, *, device_token: str) -> DeviceGrant:
        now = utcnow()
        with self._db.write() as conn:
            device = DeviceRepository(conn).by_token_hash(hash_opaque(device_token))
            user = UserRepository(conn).by_id(device.user_id) if device else None
            if device is None or user is None or not device.enabled:
                raise AuthenticationFailed("the device token is invalid or the device is disabled")
            DeviceRepository(conn).touch(device.id, now=now)
        access = self._tokens.issue_access(
            user_id=user.id,
            user_generation=user.generation,
            device_id=device.id,
            device_generation=device.token_generation,
            now=now,
        )
        return DeviceGrant(access, self._tokens.access_ttl_s, device.id)

    # -- per request -------------------------------------------------------

    def authenticate(self, *, bearer: str, device_header: str | None = None) -> Principal:
        """The principal behind an access token; 401 when anything about it is off.

        A device-bound token is checked against the device's current state on
        every request, so deleting, disabling or rotating takes effect at once.
        """
        claims = self.verify(bearer)
        now = utcnow()
        with self._db.read() as conn:
            user = UserRepository(conn).by_id(claims.user_id)
            device: Device | None = None
            wanted = self.device_wanted(claims, device_header)
            if user is not None and user.generation == claims.user_generation and wanted:
                device = DeviceRepository(conn).get(wanted)
        self.check_access(
            claims,
            device_header=device_header,
            user_generation=None if user is None else user.generation,
            device=None if device is None else _access_of(device),
        )
        assert user is not None  # check_access refused a missing user
        self.note_seen(device, now=now)
        return Principal(user, device)

    # The parts of authenticate(), for a caller that reads the user and device
    # state its own way (the download hot path: in the same statement as the item).

    def verify(self, bearer: str) -> AccessClaims:
        """The access token's claims (signature, expiry, type); 401 otherwise."""
        return self._tokens.decode_access(bearer)

    @staticmethod
    def device_wanted(claims: AccessClaims, device_header: str | None) -> str | None:
        """The device whose state decides: the token's, else the X-Device-ID one."""
        return claims.device_id if claims.device_id is not None else (device_header or None)

    @staticmethod
    def check_access(
        claims: AccessClaims,
        *,
        device_header: str | None,
        user_generation: int | None,
        device: DeviceAccess | None,
    ) -> None:
        """authenticate()'s rules, on the current state of the token's user (its
        generation; None if gone) and of the device_wanted (None if gone or none)."""
        if user_generation is None or user_generation != claims.user_generation:
            raise AuthenticationFailed("the access token has been revoked")
        if claims.device_id is not None:
            if (
                device is None
                or device.user_id != claims.user_id
                or not device.enabled
                or device.token_generation != claims.device_generation
            ):
                raise AuthenticationFailed("the device token has been revoked")
        elif device_header:
            if device is None or device.user_id != claims.user_id:
                raise DeviceForbidden("X-Device-ID does not name one of your devices")
            if not device.enabled:
                raise DeviceForbidden("that device is disabled")

    @staticmethod
    def seen_is_stale(device: Device | DeviceAccess | None, *, now: datetime) -> bool:
        """Whether note_seen(device, now=now) writes."""
        return device is not None and (
            device.last_seen_at is None or now - device.last_seen_at > _SEEN_RESOLUTION
        )

    def note_seen(self, device: Device | DeviceAccess | None, *, now: datetime) -> None:
        """Refresh the device's last_seen_at if it is older than _SEEN_RESOLUTION
        (after the read transaction: this is a write)."""
        if device is not None and self.seen_is_stale(device, now=now):
            with self._db.write() as conn:
                DeviceRepository(conn).touch(device.id, now=now)

    @staticmethod
    def require_device(principal: Principal) -> Device:
        if principal.device is None:
            raise DeviceRequired(
                "this operation acts for a device: use a device token or send X-Device-ID"
            )
        return principal.device


def _access_of(device: Device) -> DeviceAccess:
    return DeviceAccess(
        device.id, device.user_id, device.enabled, device.token_generation, device.last_seen_at
    )
