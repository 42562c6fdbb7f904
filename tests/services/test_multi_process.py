"""Background jobs with several server processes on one PostgreSQL database.

Two `Database` handles are two processes as PostgreSQL sees them (separate
sessions): a job whose advisory lock the other holds is skipped, never run
twice at once, and runs once the other lets go.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from shelfsync.content_hash import hash_bytes
from shelfsync.server.api.dependencies import Services
from shelfsync.server.app import build_services
from shelfsync.server.domain.accounts import User
from shelfsync.server.domain.clock import utcnow
from shelfsync.server.domain.errors import StorageFailure
from shelfsync.server.services.auth import Principal
from shelfsync.server.services.batch_uploads import BatchFileIn
from shelfsync.server.settings import Settings
from shelfsync.server.storage.contents import ContentRepository
from shelfsync.server.storage.engine import Database
from shelfsync.server.storage.job_locks import Job, exclusive_job

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]

NO_GRACE = timedelta(0)


@pytest.fixture
def other_process(database_url: str) -> Iterator[Database]:
    """The same database as another server process would open it."""
    other = Database(database_url)
    yield other
    other.dispose()


def _services(tmp_path: Path, database_url: str, db: Database, **extra: object) -> Services:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        argon2_time_cost=1,
        argon2_memory_kib=8192,
        **extra,  # type: ignore[arg-type]
    )
    return build_services(settings, db)


def _orphan(services: Services, user: User, data: bytes) -> str:
    """Stored bytes that nothing references (what the collector removes)."""
    content_hash = hash_bytes(data)
    session_id = "00000000-0000-4000-8000-" + content_hash[:12]
    services.blobs.create_session_file(session_id, len(data))
    chunk = services.blobs.open_chunk(session_id, 0)
    chunk.write(data)
    chunk.sync()
    chunk.close()
    services.blobs.commit_session(session_id, content_hash)
    with services.db.write() as tx:
        ContentRepository(tx).add(
            user_id=user.id, content_hash=content_hash, size=len(data), now=utcnow()
        )
    return content_hash


def test_content_gc_is_skipped_while_another_process_runs_it(
    tmp_path: Path, database_url: str, db: Database, other_process: Database
) -> None:
    services = _services(tmp_path, database_url, db)
    user = services.accounts.add_user(username="alice", password="correct horse battery")
    orphan = _orphan(services, user, b"nobody needs this")

    with exclusive_job(other_process, Job.CONTENT_GC) as held:
        assert held
        assert services.content_gc.collect(grace=NO_GRACE) == 0
        assert services.blobs.has(orphan)
    assert services.content_gc.collect(grace=NO_GRACE) == 1
    assert not services.blobs.has(orphan)


def test_recovery_leaves_trash_alone_while_another_process_collects(
    tmp_path: Path, database_url: str, db: Database, other_process: Database
) -> None:
    services = _services(tmp_path, database_url, db)
    user = services.accounts.add_user(username="alice", password="correct horse battery")
    content_hash = _orphan(services, user, b"being removed by the other process")
    # The other process is between its rename into trash/ and its commit: its
    # trash file is no crash's leftover, and must not be restored under it.
    with exclusive_job(other_process, Job.CONTENT_GC):
        trashed = services.blobs.trash(content_hash)
        assert services.content_gc.recover() == 0
        assert trashed is not None
        assert trashed.exists()
    # Once it is gone (say it crashed), the next recovery restores the file.
    assert services.content_gc.recover() == 1
    assert services.blobs.has(content_hash)


def test_upload_expiry_is_skipped_while_another_process_runs_it(
    tmp_path: Path, database_url: str, db: Database, other_process: Database
) -> None:
    services = _services(tmp_path, database_url, db, upload_expiry_s=0)
    user = services.accounts.add_user(username="alice", password="correct horse battery")
    device = services.devices.register(Principal(user, None), name="laptop")[0].device
    data = b"never finished"
    session = services.uploads.create(
        Principal(user, device),
        path="a.txt",
        size=len(data),
        content_hash=hash_bytes(data),
        base_revision=None,
    )
    assert services.blobs.session_exists(session.id)

    with exclusive_job(other_process, Job.UPLOAD_EXPIRY):
        assert services.uploads.expire_idle() == 0
        assert services.blobs.session_exists(session.id)
    assert services.uploads.expire_idle() == 1
    assert not services.blobs.session_exists(session.id)


def test_a_job_lock_is_one_holder_at_a_time_and_free_again_after(
    db: Database, other_process: Database
) -> None:
    with exclusive_job(db, Job.RETENTION) as first:
        assert first
        with exclusive_job(other_process, Job.RETENTION) as second:
            assert not second
        with exclusive_job(other_process, Job.CONTENT_GC) as unrelated:
            assert unrelated  # one lock per job
    with exclusive_job(other_process, Job.RETENTION) as after:
        assert after


def _stored(services: Services, content_hash: str) -> bytes | None:
    """The content's bytes wherever they are: the database (small content) or its file."""
    with services.db.read() as tx:
        data: bytes | None = ContentRepository(tx).inline_one(content_hash)
    if data is None and services.blobs.has(content_hash):
        data = services.blobs.object_path(content_hash).read_bytes()
    return data


# Small content as files (inline storage off), or in the database (the default).
STORED_AS = pytest.mark.parametrize("inline_max_bytes", [0, 64 * 1024], ids=["file", "inline"])


@STORED_AS
def test_an_upload_completing_while_another_process_collects_its_content_keeps_it(
    tmp_path: Path,
    database_url: str,
    db: Database,
    other_process: Database,
    inline_max_bytes: int,
) -> None:
    """Bob uploads bytes that Alice's unreferenced content already holds, while
    the other process's collector, which found that content unreferenced, is
    removing it. `complete` must wait for the removal and then store Bob's
    bytes (as a file, or in the database), not drop them in favour of a file
    about to vanish."""
    here = _services(tmp_path, database_url, db, inline_max_bytes=inline_max_bytes)
    there = _services(tmp_path, database_url, other_process, inline_max_bytes=inline_max_bytes)
    alice = here.accounts.add_user(username="alice", password="correct horse battery")
    bob = here.accounts.add_user(username="bob", password="correct horse battery")
    phone = here.devices.register(Principal(bob, None), name="phone")[0].device
    data = b"the same bytes, stored twice"
    content_hash = _orphan(here, alice, data)

    with other_process.write() as collecting:
        # The collector's check passed before Bob's session existed.
        assert ContentRepository(collecting).lock_if_unreferenced(content_hash)
        session = here.uploads.create(
            Principal(bob, phone),
            path="b.txt",
            size=len(data),
            content_hash=content_hash,
            base_revision=None,
        )
        assert not session.deduplicated
        chunk = here.uploads.begin_chunk(
            Principal(bob, phone), session.id, 0, content_length=len(data), content_digest=None
        )
        chunk.feed(data)
        chunk.finish()
        outcome: dict[str, object] = {}

        def complete() -> None:
            outcome["done"] = here.uploads.complete(Principal(bob, phone), session.id)

        completing = threading.Thread(target=complete)
        completing.start()
        completing.join(timeout=1.0)
        assert completing.is_alive(), "complete did not wait for the collector's lock"
        trashed = there.blobs.trash(content_hash)
        ContentRepository(collecting).remove(content_hash)
    assert trashed is not None
    there.blobs.empty_trash(trashed)
    completing.join(timeout=30)
    assert not completing.is_alive()
    assert "done" in outcome

    assert _stored(here, content_hash) == data
    assert here.blobs.has(content_hash) == (inline_max_bytes == 0)
    with db.read() as tx:
        assert ContentRepository(tx).size_for_user(bob.id, content_hash) == len(data)
    assert here.content_gc.collect(grace=NO_GRACE) == 0  # Bob's file references it now


@STORED_AS
def test_a_batch_upload_racing_the_collector_never_records_missing_bytes(
    tmp_path: Path,
    database_url: str,
    db: Database,
    other_process: Database,
    inline_max_bytes: int,
) -> None:
    """Bob's batch carries bytes that Alice's unreferenced content holds. Its
    publish finds the stored file and drops Bob's copy; right then the other
    process's collector removes that content. The batch must not record the
    content (its file is gone): that file comes back rejected, retryable, and
    the retry stores Bob's bytes. Stored in the database, Bob's bytes are kept
    until the commit that records them: the same race just stores them."""
    here = _services(tmp_path, database_url, db, inline_max_bytes=inline_max_bytes)
    there = _services(tmp_path, database_url, other_process, inline_max_bytes=inline_max_bytes)
    alice = here.accounts.add_user(username="alice", password="correct horse battery")
    bob = here.accounts.add_user(username="bob", password="correct horse battery")
    phone = here.devices.register(Principal(bob, None), name="phone")[0].device
    data = b"the same bytes, in a batch"
    content_hash = _orphan(here, alice, data)
    principal = Principal(bob, phone)
    wanted = BatchFileIn(
        path="b.txt", size=len(data), content_hash=content_hash, base_revision=None
    )

    publish = here.blobs.publish

    def publish_then_collect(staged: list[Any]) -> None:
        publish(staged)
        assert there.content_gc.collect(grace=NO_GRACE) == 1

    here.blobs.publish = publish_then_collect  # type: ignore[method-assign]
    receiver = here.batch_uploads.begin(principal, [wanted])
    receiver.feed(data)
    (result,) = receiver.finish()
    if inline_max_bytes:
        assert result.status == "applied"
        assert _stored(here, content_hash) == data
        assert not here.blobs.has(content_hash)  # Alice's file went; Bob's bytes are inline
        with db.read() as tx:
            assert ContentRepository(tx).size_for_user(bob.id, content_hash) == len(data)
        return
    assert result.status == "rejected"
    assert isinstance(result.error, StorageFailure)  # 503 storage_unavailable: retry
    with db.read() as tx:
        assert ContentRepository(tx).size_for_user(bob.id, content_hash) is None

    here.blobs.publish = publish  # type: ignore[method-assign]
    receiver = here.batch_uploads.begin(principal, [wanted])
    receiver.feed(data)
    (again,) = receiver.finish()
    assert again.status == "applied"
    assert here.blobs.object_path(content_hash).read_bytes() == data
