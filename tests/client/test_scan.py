"""scan.py: hashing only what changed, moves (inode, content), ignores, NFC, symlinks."""

from __future__ import annotations

import os
import threading
import time
import unicodedata
from pathlib import Path

import pytest

from shelfsync.client import scan
from shelfsync.client.scan import (
    RACY_WINDOW_NS,
    LocalFile,
    LocalMove,
    Scanner,
    ScanResult,
    find_moves,
    is_blocked,
)
from shelfsync.client.state import LocalRecord, SyncedRecord
from shelfsync.content_hash import BLOCK_SIZE, ContentHasher, hash_blocks, hash_bytes

OLD_NS = 1_600_000_000 * 10**9  # an mtime far from "now": never racy


def write(root: Path, rel: str, data: bytes, *, old: bool = True) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if old:
        os.utime(path, ns=(OLD_NS, OLD_NS))
    return path


def synced_from(result: ScanResult) -> dict[str, SyncedRecord]:
    """What a completed sync of this scan would have recorded."""
    return {
        f.path: SyncedRecord(
            f.path, f.local, f"id-{f.path}", 1, f.content_hash, f.size, f.mtime_ns, f.inode
        )
        for f in result.files.values()
    }


def cache_of(result: ScanResult) -> dict[str, LocalRecord]:
    return {r.path: r for r in result.records}


def test_first_scan_hashes_every_file(tmp_path: Path) -> None:
    write(tmp_path, "a.txt", b"alpha")
    write(tmp_path, "dir/b.txt", b"beta")
    result = Scanner(tmp_path).scan(synced={}, cache={})
    assert {p: f.content_hash for p, f in result.files.items()} == {
        "a.txt": hash_bytes(b"alpha"),
        "dir/b.txt": hash_bytes(b"beta"),
    }
    assert result.hashed == 2


def test_second_scan_hashes_only_what_changed(tmp_path: Path) -> None:
    write(tmp_path, "same.txt", b"unchanged")
    write(tmp_path, "edit.txt", b"before")
    first = Scanner(tmp_path).scan(synced={}, cache={})
    write(tmp_path, "edit.txt", b"after, longer")
    second = Scanner(tmp_path).scan(synced={}, cache=cache_of(first))
    assert second.hashed == 1
    assert second.files["edit.txt"].content_hash == hash_bytes(b"after, longer")
    assert second.files["same.txt"].content_hash == hash_bytes(b"unchanged")


def test_large_files_are_hashed_on_several_threads_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each hash waits for the other at a barrier: hashed one after the other
    in one task, the first would wait alone and the barrier break."""
    monkeypatch.setattr(scan, "_HASH_GROUP_BYTES", 1024 * 1024)
    for name in ("a.bin", "b.bin"):
        write(tmp_path, name, name.encode() * (1024 * 1024))
    write(tmp_path, "small.txt", b"small")
    both = threading.Barrier(2, timeout=10)
    hash_file = scan._hash_local_file

    def meet_then_hash(path: Path | str) -> object:
        if str(path).endswith(".bin"):
            both.wait()
        return hash_file(path)

    monkeypatch.setattr(scan, "_hash_local_file", meet_then_hash)
    result = Scanner(tmp_path, hash_workers=2).scan(synced={}, cache={})
    assert result.hashed == 3
    for name in ("a.bin", "b.bin"):
        assert result.files[name].content_hash == hash_bytes(name.encode() * (1024 * 1024))


def test_a_file_modified_right_after_hashing_is_hashed_again(tmp_path: Path) -> None:
    write(tmp_path, "racy.txt", b"one", old=False)
    first = Scanner(tmp_path).scan(synced={}, cache={})
    record = first.records[0]
    assert record.mtime_ns >= record.checked_ns - RACY_WINDOW_NS
    second = Scanner(tmp_path).scan(synced={}, cache=cache_of(first))
    assert second.hashed == 1  # its mtime is too close to the hash to be trusted


def test_a_renamed_file_is_a_move_and_is_not_hashed_again(tmp_path: Path) -> None:
    write(tmp_path, "old name.txt", b"content")
    first = Scanner(tmp_path).scan(synced={}, cache={})
    (tmp_path / "old name.txt").rename(tmp_path / "new name.txt")
    second = Scanner(tmp_path).scan(synced=synced_from(first), cache=cache_of(first))
    assert second.moves == [LocalMove("old name.txt", "new name.txt")]
    assert second.hashed == 0


def test_a_renamed_folder_moves_every_file_in_it(tmp_path: Path) -> None:
    for i in range(5):
        write(tmp_path, f"photos/2024/img{i}.jpg", f"image {i}".encode())
    first = Scanner(tmp_path).scan(synced={}, cache={})
    (tmp_path / "photos/2024").rename(tmp_path / "photos/2025")
    second = Scanner(tmp_path).scan(synced=synced_from(first), cache=cache_of(first))
    assert sorted(second.moves, key=lambda m: m.to_path) == [
        LocalMove(f"photos/2024/img{i}.jpg", f"photos/2025/img{i}.jpg") for i in range(5)
    ]


def test_a_copy_then_delete_is_a_move_found_by_content(tmp_path: Path) -> None:
    write(tmp_path, "a.bin", b"same bytes")
    first = Scanner(tmp_path).scan(synced={}, cache={})
    write(tmp_path, "b.bin", b"same bytes")  # a new inode
    (tmp_path / "a.bin").unlink()
    second = Scanner(tmp_path).scan(synced=synced_from(first), cache=cache_of(first))
    assert second.moves == [LocalMove("a.bin", "b.bin")]


def test_a_reused_inode_with_other_content_is_not_a_move(tmp_path: Path) -> None:
    write(tmp_path, "gone.txt", b"old")
    first = Scanner(tmp_path).scan(synced={}, cache={})
    synced = synced_from(first)
    (tmp_path / "gone.txt").unlink()
    new = write(tmp_path, "new.txt", b"something else")
    # Whatever inode the file system picked, pretend it reused the old one.
    synced["gone.txt"] = SyncedRecord(
        "gone.txt",
        "gone.txt",
        "id",
        1,
        synced["gone.txt"].content_hash,
        3,
        OLD_NS,
        new.stat().st_ino,
    )
    second = Scanner(tmp_path).scan(synced=synced, cache=cache_of(first))
    assert second.moves == []


def test_empty_files_are_not_paired_by_content() -> None:
    empty = hash_bytes(b"")
    synced = {"a.txt": SyncedRecord("a.txt", "a.txt", "id", 1, empty, 0, OLD_NS, 11)}
    files = {"b.txt": LocalFile("b.txt", "b.txt", 0, OLD_NS, 22, empty)}
    assert find_moves(synced=synced, files=files) == []


def test_duplicates_pair_by_inode_first() -> None:
    h = hash_bytes(b"dup")
    synced = {
        "x/1.txt": SyncedRecord("x/1.txt", "x/1.txt", "i1", 1, h, 3, OLD_NS, 101),
        "x/2.txt": SyncedRecord("x/2.txt", "x/2.txt", "i2", 1, h, 3, OLD_NS, 102),
    }
    files = {
        "y/1.txt": LocalFile("y/1.txt", "y/1.txt", 3, OLD_NS, 102, h),
        "y/2.txt": LocalFile("y/2.txt", "y/2.txt", 3, OLD_NS, 101, h),
    }
    assert find_moves(synced=synced, files=files) == [
        LocalMove("x/2.txt", "y/1.txt"),
        LocalMove("x/1.txt", "y/2.txt"),
    ]


@pytest.mark.parametrize(
    "rel",
    [
        ".shelfsync/state.db",
        "music/.abc123-def.shelfsync-part",
        "notes.txt.swp",
        "draft~",
        ".~lock.report.odt#",
        "video.mkv.part",
        ".DS_Store",
        "build/out.o",
        "logs/today.log",
    ],
)
def test_ignored_names_are_not_synced(tmp_path: Path, rel: str) -> None:
    write(tmp_path, ".shelfsyncignore", b"build/\n*.log\n!keep.log\n")
    write(tmp_path, rel, b"x")
    write(tmp_path, "keep.log", b"kept")
    result = Scanner(tmp_path).scan(synced={}, cache={})
    assert rel not in result.files
    assert {"keep.log", ".shelfsyncignore"} <= set(result.files)


def test_partial_downloads_are_found_for_the_sweep(tmp_path: Path) -> None:
    write(tmp_path, "d/.k-abc.shelfsync-part", b"half")
    assert Scanner(tmp_path).scan(synced={}, cache={}).partials == ["d/.k-abc.shelfsync-part"]


def test_symlinks_are_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside, "secret.txt", b"not ours")
    root = tmp_path / "root"
    write(root, "real.txt", b"ours")
    (root / "link-dir").symlink_to(outside, target_is_directory=True)
    (root / "link-file").symlink_to(outside / "secret.txt")
    result = Scanner(root).scan(synced={}, cache={})
    assert set(result.files) == {"real.txt"}


def test_nfd_names_are_library_paths_in_nfc(tmp_path: Path) -> None:
    nfd = unicodedata.normalize("NFD", "Café/Élan.txt")
    write(tmp_path, nfd, b"accents")
    result = Scanner(tmp_path).scan(synced={}, cache={})
    (entry,) = result.files.values()
    assert entry.path == "Café/Élan.txt"
    assert entry.local == nfd
    assert result.dirs["Café"] == unicodedata.normalize("NFD", "Café")


def test_two_names_equal_after_nfc_are_one_file(tmp_path: Path) -> None:
    nfc = "Résumé.txt"
    nfd = unicodedata.normalize("NFD", nfc)
    write(tmp_path, nfc, b"nfc")
    write(tmp_path, nfd, b"nfd")
    result = Scanner(tmp_path).scan(synced={}, cache={})
    assert list(result.files) == [nfc]
    assert result.files[nfc].local == nfc  # the canonical spelling wins
    assert any("Unicode normalization" in w for w in result.warnings)


def test_synced_aliases_map_local_names_back_to_library_paths(tmp_path: Path) -> None:
    write(tmp_path, "Song (case 2).mp3", b"second")
    synced = {
        "song.mp3": SyncedRecord("song.mp3", "Song (case 2).mp3", "id", 1, "h", 6, OLD_NS, 1),
    }
    result = Scanner(tmp_path).scan(synced=synced, cache={})
    assert list(result.files) == ["song.mp3"]


def test_names_that_cannot_be_library_paths_are_skipped_with_a_warning(tmp_path: Path) -> None:
    write(tmp_path, "back\\slash.txt", b"x")
    write(tmp_path, "fine.txt", b"y")
    result = Scanner(tmp_path).scan(synced={}, cache={})
    assert set(result.files) == {"fine.txt"}
    assert result.warnings


def test_an_unreadable_directory_blocks_its_paths_instead_of_deleting_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "locked/a.txt", b"x")
    write(tmp_path, "open/b.txt", b"y")
    real_scandir = os.scandir

    def scandir(path: Path) -> object:
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr("shelfsync.client.scan.os.scandir", scandir)
    result = Scanner(tmp_path).scan(synced={}, cache={})
    assert "locked/" in result.blocked
    assert is_blocked("locked/a.txt", result.blocked)
    assert set(result.files) == {"open/b.txt"}


def test_scanning_is_fast_for_unchanged_trees(tmp_path: Path) -> None:
    for i in range(2000):
        write(tmp_path, f"d{i // 100}/f{i}.txt", b"x" * (i % 50))
    first = Scanner(tmp_path).scan(synced={}, cache={})
    started = time.monotonic()
    second = Scanner(tmp_path).scan(synced=synced_from(first), cache=cache_of(first))
    assert second.hashed == 0
    assert time.monotonic() - started < 5


def test_large_files_hashed_by_the_scan_keep_their_block_digests(tmp_path: Path) -> None:
    big = os.urandom(2 * BLOCK_SIZE + 5)
    path = write(tmp_path, "big.bin", big)
    write(tmp_path, "small.bin", os.urandom(BLOCK_SIZE + 5))
    first = Scanner(tmp_path, keep_blocks_over=2 * BLOCK_SIZE).scan(synced={}, cache={})
    assert set(first.blocks) == {"big.bin"}  # only what is over the threshold
    blocks = first.blocks["big.bin"]
    expected = ContentHasher()
    expected.update(big)
    assert list(blocks.digests) == expected.finish_blocks()
    assert hash_blocks(blocks.digests) == first.files["big.bin"].content_hash
    assert blocks.still_matches(path.stat())
    # A hash from the cache brings no digests; a scanner not asked for them keeps none.
    again = Scanner(tmp_path, keep_blocks_over=0).scan(synced={}, cache=cache_of(first))
    assert again.hashed == 0
    assert again.blocks == {}
    assert Scanner(tmp_path).scan(synced={}, cache={}).blocks == {}
