"""The storage contract: every repository behaves the same on SQLite and PostgreSQL.

Each test takes `db`, so it runs once per database on a freshly migrated schema
(the pattern of Kinto's `kinto/core/storage/testing.py`).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from shelfsync.server.domain.accounts import (
    ConflictPolicy,
    Device,
    DeviceType,
    RefreshToken,
    SyncFilter,
    User,
)
from shelfsync.server.domain.errors import UserExists
from shelfsync.server.storage.devices import DeviceRepository
from shelfsync.server.storage.engine import Database
from shelfsync.server.storage.refresh_tokens import RefreshTokenRepository
from shelfsync.server.storage.tables import devices, refresh_tokens
from shelfsync.server.storage.throttle import ThrottleRepository, ThrottleState
from shelfsync.server.storage.users import UserRepository

T0 = datetime(2026, 11, 26, 18, 27, 41, 123000, tzinfo=UTC)


def _digest(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def _add_user(db: Database, username: str = "alice", *, now: datetime = T0) -> User:
    with db.write() as conn:
        return UserRepository(conn).add(
            user_id=str(uuid.uuid4()), username=username, password_hash="hash-1", now=now
        )


def _device(user: User, *, name: str = "laptop", created_at: datetime = T0) -> Device:
    return Device(
        id=str(uuid.uuid4()),
        user_id=user.id,
        name=name,
        device_type=DeviceType.LAPTOP,
        os="linux",
        client_version="1.0",
        enabled=True,
        token_generation=1,
        created_at=created_at,
        last_seen_at=None,
        last_sync_at=None,
        acked_seq=None,
        sync_filter=SyncFilter(include=("books/**",), exclude=("*.tmp",)),
        conflict_policy=ConflictPolicy.MANUAL,
    )


def _add_device(db: Database, device: Device, *, token_hash: str | None = None) -> str:
    digest = token_hash or _digest(f"device-token-{device.id}")
    with db.write() as conn:
        DeviceRepository(conn).add(device, token_hash=digest)
    return digest


def _refresh(
    user: User, *, family_id: str | None = None, expires_at: datetime = T0 + timedelta(days=30)
) -> RefreshToken:
    return RefreshToken(
        id=str(uuid.uuid4()),
        user_id=user.id,
        family_id=family_id or str(uuid.uuid4()),
        user_generation=user.generation,
        issued_at=T0,
        expires_at=expires_at,
        used_at=None,
        revoked=False,
    )


def _add_refresh(db: Database, token: RefreshToken) -> str:
    digest = _digest(f"refresh-{token.id}")
    with db.write() as conn:
        RefreshTokenRepository(conn).add(token, token_hash=digest)
    return digest


def _by_hash(db: Database, digest: str) -> RefreshToken | None:
    with db.read() as conn:
        return RefreshTokenRepository(conn).by_hash(digest)


def _count(db: Database, table: sa.Table, user_id: str) -> int:
    with db.read() as conn:
        return conn.execute(
            sa.select(sa.func.count()).select_from(table).where(table.c.user_id == user_id)
        ).scalar_one()


def _assert_utc(value: datetime | None, expected: datetime) -> None:
    assert value is not None
    assert value.tzinfo is not None
    assert value.utcoffset() == timedelta(0)
    assert value == expected


# -- users -----------------------------------------------------------------


def test_added_user_is_found_by_username_and_by_id(db: Database) -> None:
    added = _add_user(db, "alice")
    with db.read() as conn:
        repo = UserRepository(conn)
        assert repo.by_username("alice") == added
        assert repo.by_id(added.id) == added
    assert added.generation == 1


def test_unknown_user_is_none(db: Database) -> None:
    _add_user(db, "alice")
    with db.read() as conn:
        repo = UserRepository(conn)
        assert repo.by_username("nobody") is None
        assert repo.by_id(str(uuid.uuid4())) is None


def test_adding_an_existing_username_raises_user_exists(db: Database) -> None:
    _add_user(db, "alice")
    with pytest.raises(UserExists):
        _add_user(db, "alice")
    with db.read() as conn:
        assert [u.username for u in UserRepository(conn).all()] == ["alice"]


def test_all_users_are_listed_by_username(db: Database) -> None:
    for name in ("carol", "alice", "bob"):
        _add_user(db, name)
    with db.read() as conn:
        assert [u.username for u in UserRepository(conn).all()] == ["alice", "bob", "carol"]


def test_set_password_replaces_hash_and_bumps_generation(db: Database) -> None:
    user = _add_user(db)
    with db.write() as conn:
        UserRepository(conn).set_password(user_id=user.id, password_hash="hash-2")
    with db.read() as conn:
        stored = UserRepository(conn).by_id(user.id)
    assert stored is not None
    assert (stored.password_hash, stored.generation) == ("hash-2", 2)


def test_rehash_replaces_hash_without_bumping_generation(db: Database) -> None:
    user = _add_user(db)
    with db.write() as conn:
        UserRepository(conn).rehash(user_id=user.id, password_hash="hash-stronger")
    with db.read() as conn:
        stored = UserRepository(conn).by_id(user.id)
    assert stored is not None
    assert (stored.password_hash, stored.generation) == ("hash-stronger", 1)


def test_removing_a_user_cascades_to_devices_and_refresh_tokens(db: Database) -> None:
    alice, bob = _add_user(db, "alice"), _add_user(db, "bob")
    for user in (alice, bob):
        _add_device(db, _device(user))
        _add_refresh(db, _refresh(user))
    with db.write() as conn:
        UserRepository(conn).remove(alice.id)
    counts = {
        (user.username, table.name): _count(db, table, user.id)
        for user in (alice, bob)
        for table in (devices, refresh_tokens)
    }
    assert counts == {
        ("alice", "devices"): 0,
        ("alice", "refresh_tokens"): 0,
        ("bob", "devices"): 1,
        ("bob", "refresh_tokens"): 1,
    }


# -- devices ---------------------------------------------------------------


def test_added_device_reads_back_equal(db: Database) -> None:
    device = _device(_add_user(db))
    _add_device(db, device)
    with db.read() as conn:
        assert DeviceRepository(conn).get(device.id) == device


def test_device_is_found_by_its_token_hash(db: Database) -> None:
    device = _device(_add_user(db))
    digest = _add_device(db, device)
    with db.read() as conn:
        repo = DeviceRepository(conn)
        assert repo.by_token_hash(digest) == device
        assert repo.by_token_hash(_digest("some other token")) is None


def test_unknown_device_is_none(db: Database) -> None:
    with db.read() as conn:
        assert DeviceRepository(conn).get(str(uuid.uuid4())) is None


def test_devices_for_user_are_theirs_only_oldest_first(db: Database) -> None:
    alice, bob = _add_user(db, "alice"), _add_user(db, "bob")
    # Inserted out of order: the listing orders by creation time, not insertion.
    for name, minutes in (("second", 2), ("third", 3), ("first", 1)):
        _add_device(db, _device(alice, name=name, created_at=T0 + timedelta(minutes=minutes)))
    _add_device(db, _device(bob, name="bobs"))
    with db.read() as conn:
        names = [d.name for d in DeviceRepository(conn).for_user(alice.id)]
    assert names == ["first", "second", "third"]


def test_update_stores_the_editable_fields(db: Database) -> None:
    device = _device(_add_user(db))
    _add_device(db, device)
    changed = replace(
        device,
        name="renamed",
        enabled=False,
        os="macOS",
        client_version="2.0",
        sync_filter=SyncFilter(include=("music/**",), exclude=()),
        conflict_policy=ConflictPolicy.KEEP_BOTH,
    )
    with db.write() as conn:
        DeviceRepository(conn).update(changed)
    with db.read() as conn:
        assert DeviceRepository(conn).get(device.id) == changed


def test_rotate_token_bumps_generation_and_replaces_the_hash(db: Database) -> None:
    device = _device(_add_user(db))
    old_hash = _add_device(db, device)
    new_hash = _digest("rotated")
    with db.write() as conn:
        rotated = DeviceRepository(conn).rotate_token(device, token_hash=new_hash)
    with db.read() as conn:
        repo = DeviceRepository(conn)
        stored = repo.get(device.id)
        by_old, by_new = repo.by_token_hash(old_hash), repo.by_token_hash(new_hash)
    assert rotated.token_generation == 2
    assert stored == rotated
    assert by_old is None
    assert by_new == rotated


def test_deleted_device_is_hidden_everywhere(db: Database) -> None:
    user = _add_user(db)
    device = _device(user)
    _add_device(db, device)
    tombstone = _digest("tombstone")
    with db.write() as conn:
        DeviceRepository(conn).mark_deleted(device.id, now=T0, tombstone_hash=tombstone)
    with db.read() as conn:
        repo = DeviceRepository(conn)
        assert repo.get(device.id) is None
        assert repo.for_user(user.id) == []
        assert repo.by_token_hash(tombstone) is None


def test_deleted_device_token_hash_no_longer_matches(db: Database) -> None:
    device = _device(_add_user(db))
    old_hash = _add_device(db, device)
    with db.write() as conn:
        DeviceRepository(conn).mark_deleted(device.id, now=T0, tombstone_hash=_digest("tombstone"))
    with db.read() as conn:
        assert DeviceRepository(conn).by_token_hash(old_hash) is None
        stored = conn.execute(sa.select(devices.c.token_hash)).scalar_one()
    assert stored != old_hash


def test_touch_sets_last_seen_at(db: Database) -> None:
    device = _device(_add_user(db))
    _add_device(db, device)
    seen = T0 + timedelta(hours=1)
    with db.write() as conn:
        DeviceRepository(conn).touch(device.id, now=seen)
    with db.read() as conn:
        stored = DeviceRepository(conn).get(device.id)
    assert stored is not None
    _assert_utc(stored.last_seen_at, seen)


def test_two_devices_cannot_share_a_token_hash(db: Database) -> None:
    user = _add_user(db)
    _add_device(db, _device(user), token_hash=_digest("same"))
    with pytest.raises(sa.exc.IntegrityError):
        _add_device(db, _device(user), token_hash=_digest("same"))


# -- refresh tokens --------------------------------------------------------


def test_added_refresh_token_is_found_by_hash(db: Database) -> None:
    token = _refresh(_add_user(db))
    digest = _add_refresh(db, token)
    assert _by_hash(db, digest) == token
    assert _by_hash(db, _digest("unknown")) is None


def test_refresh_token_can_be_spent_only_once(db: Database) -> None:
    token = _refresh(_add_user(db))
    digest = _add_refresh(db, token)
    spent_at = T0 + timedelta(minutes=5)
    with db.write() as conn:
        first = RefreshTokenRepository(conn).spend(token.id, now=spent_at)
    with db.write() as conn:
        second = RefreshTokenRepository(conn).spend(token.id, now=spent_at + timedelta(minutes=1))
    stored = _by_hash(db, digest)
    assert (first, second) == (True, False)
    assert stored is not None
    _assert_utc(stored.used_at, spent_at)


def test_revoke_family_revokes_that_chain_only(db: Database) -> None:
    user = _add_user(db)
    family = str(uuid.uuid4())
    chain = [_add_refresh(db, _refresh(user, family_id=family)) for _ in range(2)]
    other = _add_refresh(db, _refresh(user))
    with db.write() as conn:
        RefreshTokenRepository(conn).revoke_family(family)
    revoked = {d: getattr(_by_hash(db, d), "revoked", None) for d in [*chain, other]}
    assert revoked == {chain[0]: True, chain[1]: True, other: False}


def test_revoke_user_revokes_that_users_tokens_only(db: Database) -> None:
    alice, bob = _add_user(db, "alice"), _add_user(db, "bob")
    alices = [_add_refresh(db, _refresh(alice)) for _ in range(2)]
    bobs = _add_refresh(db, _refresh(bob))
    with db.write() as conn:
        RefreshTokenRepository(conn).revoke_user(alice.id)
    revoked = {d: getattr(_by_hash(db, d), "revoked", None) for d in [*alices, bobs]}
    assert revoked == {alices[0]: True, alices[1]: True, bobs: False}


def test_purge_expired_deletes_only_expired_tokens(db: Database) -> None:
    user = _add_user(db)
    now = T0 + timedelta(days=1)
    expired = _add_refresh(db, _refresh(user, expires_at=now - timedelta(seconds=1)))
    live = _add_refresh(db, _refresh(user, expires_at=now + timedelta(seconds=1)))
    with db.write() as conn:
        purged = RefreshTokenRepository(conn).purge_expired(now=now)
    assert purged == 1
    assert _by_hash(db, expired) is None
    assert _by_hash(db, live) is not None


# -- login throttle --------------------------------------------------------


def _throttle_get(db: Database, key: str) -> ThrottleState | None:
    with db.read() as conn:
        return ThrottleRepository(conn).get(key)


def test_unknown_throttle_key_is_none(db: Database) -> None:
    assert _throttle_get(db, "user:nobody") is None


def test_throttle_put_twice_keeps_the_latest_state(db: Database) -> None:
    first = ThrottleState(1, T0, None)
    second = ThrottleState(2, T0, T0 + timedelta(minutes=5))
    for state in (first, second):
        with db.write() as conn:
            ThrottleRepository(conn).put("user:alice", state)
    assert _throttle_get(db, "user:alice") == second


def test_throttle_clear_removes_that_key_only(db: Database) -> None:
    with db.write() as conn:
        repo = ThrottleRepository(conn)
        repo.put("user:alice", ThrottleState(1, T0, None))
        repo.put("ip:127.0.0.1", ThrottleState(1, T0, None))
    with db.write() as conn:
        ThrottleRepository(conn).clear("user:alice")
    assert _throttle_get(db, "user:alice") is None
    assert _throttle_get(db, "ip:127.0.0.1") is not None


@pytest.mark.parametrize(
    ("window_started_at", "blocked_until", "purged"),
    [
        pytest.param(T0 - timedelta(hours=1), None, True, id="old-window-unblocked"),
        pytest.param(T0 - timedelta(hours=1), T0 - timedelta(minutes=1), True, id="block-ended"),
        pytest.param(T0 - timedelta(hours=1), T0 + timedelta(minutes=1), False, id="still-blocked"),
        pytest.param(T0 + timedelta(minutes=1), None, False, id="recent-window"),
    ],
)
def test_throttle_purge_before_deletes_only_stale_entries(
    db: Database, window_started_at: datetime, blocked_until: datetime | None, purged: bool
) -> None:
    with db.write() as conn:
        ThrottleRepository(conn).put("key", ThrottleState(3, window_started_at, blocked_until))
    with db.write() as conn:
        count = ThrottleRepository(conn).purge_before(T0)
    assert count == int(purged)
    assert (_throttle_get(db, "key") is None) is purged


# -- timestamps ------------------------------------------------------------

OFFSETS = [
    pytest.param(UTC, id="utc"),
    pytest.param(timezone(timedelta(hours=2)), id="plus-2h"),
    pytest.param(timezone(-timedelta(hours=7, minutes=30)), id="minus-7h30"),
]


@pytest.mark.parametrize("tz", OFFSETS)
def test_user_created_at_round_trips_as_aware_utc(db: Database, tz: timezone) -> None:
    user = _add_user(db, now=T0.astimezone(tz))
    with db.read() as conn:
        stored = UserRepository(conn).by_id(user.id)
    assert stored is not None
    _assert_utc(stored.created_at, T0)


@pytest.mark.parametrize("tz", OFFSETS)
def test_device_timestamps_round_trip_as_aware_utc(db: Database, tz: timezone) -> None:
    device = _device(_add_user(db), created_at=T0.astimezone(tz))
    _add_device(db, device)
    deleted_at = T0 + timedelta(days=1)
    with db.write() as conn:
        DeviceRepository(conn).touch(device.id, now=(T0 + timedelta(hours=1)).astimezone(tz))
    with db.read() as conn:
        stored = DeviceRepository(conn).get(device.id)
    with db.write() as conn:
        DeviceRepository(conn).mark_deleted(
            device.id, now=deleted_at.astimezone(tz), tombstone_hash=_digest("gone")
        )
    with db.read() as conn:
        stored_deleted_at = conn.execute(sa.select(devices.c.deleted_at)).scalar_one()
    assert stored is not None
    _assert_utc(stored.created_at, T0)
    _assert_utc(stored.last_seen_at, T0 + timedelta(hours=1))
    _assert_utc(stored_deleted_at, deleted_at)


@pytest.mark.parametrize("tz", OFFSETS)
def test_refresh_token_timestamps_round_trip_as_aware_utc(db: Database, tz: timezone) -> None:
    user = _add_user(db)
    token = replace(
        _refresh(user),
        issued_at=T0.astimezone(tz),
        expires_at=(T0 + timedelta(days=30)).astimezone(tz),
    )
    digest = _add_refresh(db, token)
    stored = _by_hash(db, digest)
    assert stored is not None
    _assert_utc(stored.issued_at, T0)
    _assert_utc(stored.expires_at, T0 + timedelta(days=30))


@pytest.mark.parametrize("tz", OFFSETS)
def test_throttle_timestamps_round_trip_as_aware_utc(db: Database, tz: timezone) -> None:
    state = ThrottleState(1, T0.astimezone(tz), (T0 + timedelta(minutes=5)).astimezone(tz))
    with db.write() as conn:
        ThrottleRepository(conn).put("key", state)
    stored = _throttle_get(db, "key")
    assert stored is not None
    _assert_utc(stored.window_started_at, T0)
    _assert_utc(stored.blocked_until, T0 + timedelta(minutes=5))


def test_naive_datetime_is_refused(db: Database) -> None:
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        _add_user(db, now=T0.replace(tzinfo=None))
