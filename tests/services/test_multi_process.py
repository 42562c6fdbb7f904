"""Background jobs with several server processes on one PostgreSQL database.

Two `Database` handles are two processes as PostgreSQL sees them (separate
sessions): a job whose advisory lock the other holds is skipped, never run
twice at once, and runs once the other lets go.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from shelfsync.content_hash import hash_bytes
from shelfsync.server.api.dependencies import Services
from shelfsync.server.app import build_services
from shelfsync.server.domain.accounts import User
from shelfsync.server.domain.clock import utcnow
from shelfsync.server.services.auth import Principal
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
