"""state.py: the three trees, cursor, transfers and conflicts survive a reopen."""

from __future__ import annotations

from pathlib import Path

import pytest

from shelfsync.client.errors import ConfigError
from shelfsync.client.state import (
    ConflictRecord,
    LocalRecord,
    PartialDownload,
    PendingUpload,
    RemoteRecord,
    State,
    SyncedRecord,
)

SYNCED = SyncedRecord("a.txt", "a.txt", "id-a", 3, "h" * 64, 10, 123, 456)


def remote(item_id: str, path: str, revision: int = 1) -> RemoteRecord:
    return RemoteRecord(item_id, path, revision, "c" * 64, 5, "2026-11-26T18:27:41.123+00:00")


def test_records_survive_a_reopen(tmp_path: Path) -> None:
    with State(tmp_path) as state:
        state.put_synced(SYNCED)
        state.put_local_file(LocalRecord("a.txt", "a.txt", 10, 123, 456, "h" * 64, 999))
        state.put_conflict(ConflictRecord("a.txt", "c1", None, resolved=False))
        state.put_upload(PendingUpload("big.bin", "b" * 64, "s1", 1 << 30))
        state.put_download(PartialDownload(".x.shelfsync-part", "film.mkv", "f" * 64))
        state.apply_remote(upserts=[remote("id-a", "a.txt")], deleted_ids=[], cursor="cur-1")
    with State(tmp_path) as state:
        assert state.synced() == {"a.txt": SYNCED}
        assert state.local_files()["a.txt"].checked_ns == 999
        assert state.conflicts()["a.txt"] == ConflictRecord("a.txt", "c1", None, False)
        assert state.pending_upload(path="big.bin", content_hash="b" * 64) is not None
        assert state.partial_downloads()[0].path == "film.mkv"
        assert state.remote()["a.txt"].item_id == "id-a"
        assert state.cursor == "cur-1"


def test_the_cursor_moves_with_the_remote_tree_or_not_at_all(tmp_path: Path) -> None:
    with State(tmp_path) as state:
        state.apply_remote(upserts=[remote("i1", "x")], deleted_ids=[], cursor="c1")

        class Boom(Exception):
            pass

        def interrupted() -> None:
            with state.transaction():
                state.apply_remote(upserts=[remote("i2", "y")], deleted_ids=["i1"], cursor="c2")
                raise Boom

        with pytest.raises(Boom):
            interrupted()
        assert state.cursor == "c1"
        assert set(state.remote()) == {"x"}


def test_a_later_feed_entry_takes_a_path_over_from_a_stale_one(tmp_path: Path) -> None:
    with State(tmp_path) as state:
        state.apply_remote(upserts=[remote("old", "p")], deleted_ids=[], cursor="c1")
        # The coalesced feed names the new holder before the old one's move.
        state.apply_remote(upserts=[remote("new", "p", 1)], deleted_ids=[], cursor="c2")
        assert state.remote()["p"].item_id == "new"
        state.apply_remote(upserts=[remote("old", "q", 2)], deleted_ids=[], cursor="c3")
        assert {p: r.item_id for p, r in state.remote().items()} == {"p": "new", "q": "old"}


def test_reading_the_whole_library_again_resets_the_remote_tree(tmp_path: Path) -> None:
    with State(tmp_path) as state:
        state.apply_remote(upserts=[remote("i1", "x")], deleted_ids=[], cursor="c1")
        state.apply_remote(upserts=[remote("i2", "y")], deleted_ids=[], cursor="c2", reset=True)
        assert set(state.remote()) == {"y"}


def test_binding_another_device_forgets_ids_but_keeps_the_scan_cache(tmp_path: Path) -> None:
    with State(tmp_path) as state:
        assert state.bind(server_url="http://a", device_id="d1")
        assert not state.bind(server_url="http://a", device_id="d1")
        state.put_synced(SYNCED)
        state.put_local_file(LocalRecord("a.txt", "a.txt", 10, 123, 456, "h" * 64, 999))
        state.apply_remote(upserts=[remote("i1", "x")], deleted_ids=[], cursor="c1")
        assert state.bind(server_url="http://a", device_id="d2")
        assert state.synced() == {}
        assert state.remote() == {}
        assert state.cursor is None
        assert "a.txt" in state.local_files()


def test_only_one_process_holds_a_folder(tmp_path: Path) -> None:
    with State(tmp_path) as first, State(tmp_path) as second:
        first.lock_folder()
        with pytest.raises(ConfigError, match="another shelfsync"):
            second.lock_folder()
    with State(tmp_path) as third:
        third.lock_folder()  # released when the holder closed


def test_a_state_from_another_client_version_is_refused(tmp_path: Path) -> None:
    with State(tmp_path) as state:
        state.set_meta("schema", "999")
    with pytest.raises(ConfigError, match="another client version"):
        State(tmp_path)


def _local(path: str, size: int = 10) -> LocalRecord:
    return LocalRecord(path, path, size, 123, 456, "h" * 64, 999)


def test_what_a_rolled_back_transaction_wrote_is_not_remembered(tmp_path: Path) -> None:
    # The synced and local trees are kept in memory between reads: a rollback
    # must not leave the memory saying what the database does not.
    with State(tmp_path) as state:
        state.put_synced(SYNCED)
        state.put_local_file(_local("a.txt"))
        other = SyncedRecord("b.txt", "b.txt", "id-b", 1, "h" * 64, 1, 1, 1)

        class Boom(Exception):
            pass

        def interrupted() -> None:
            with state.transaction():
                state.put_landed([(other, _local("b.txt"))])
                state.forget_synced("a.txt")
                state.forget_local_file("a.txt")
                assert set(state.synced()) == {"b.txt"}
                raise Boom

        with pytest.raises(Boom):
            interrupted()
        assert state.synced() == {"a.txt": SYNCED}
        assert set(state.local_files()) == {"a.txt"}


def test_a_scan_writes_only_the_records_that_changed(tmp_path: Path) -> None:
    records = [_local(f"f{i:05}") for i in range(1000)]
    with State(tmp_path) as state:
        state.replace_local_files(records)
        before = state._db.total_changes  # rows written so far
        state.replace_local_files(records)
        assert state._db.total_changes == before
        changed = [*records[1:500], _local("f00500", size=11), *records[501:], _local("new")]
        state.replace_local_files(changed)
        assert state._db.total_changes - before == 3  # one gone, one changed, one new
        returned = state.local_files()
        returned.clear()  # a caller's copy: the state's own is untouched
        assert len(state.local_files()) == 1000
    with State(tmp_path) as state:
        assert state.local_files() == {r.path: r for r in changed}
