"""Finding local changes: one directory walk, hashing only what changed.

A file is hashed only when its size, mtime or inode differ from the last scan
(or it was modified too close to the moment it was hashed for the mtime to be
trusted: git's "racy" rule). Symlinks are never followed and never synced;
ignored names are pruned during the walk. Library paths are the NFC form of the
on-disk names; two names that normalize alike are one file (the other is left
alone, with a warning).

Moves are found against the synced tree: a synced path that vanished and a new
path holding the same inode and content is a move; failing that, the same
content hash (a copy-and-delete, another file system). Both are reported as
moves, which keep the item's id (protocol section 7). The inode alone is not
enough: file systems reuse a deleted file's inode for the next new file, and
calling that a move would tie two unrelated files to one history. (A file
moved *and* edited between two syncs therefore travels as delete + create.)

A large file hashed by this scan keeps its block digests in the result, with
the stat they belong to (`BlockDigests`), so that its upload need not read and
hash it again while it stays as it was.
"""

from __future__ import annotations

import os
import stat
import time
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from shelfsync.client.ignore import PARTIAL_SUFFIX, IgnoreRules
from shelfsync.client.paths import library_path
from shelfsync.client.state import LocalRecord, SyncedRecord
from shelfsync.content_hash import EMPTY_HASH, hash_bytes, hash_stream

__all__ = [
    "RACY_WINDOW_NS",
    "BlockDigests",
    "LocalFile",
    "LocalMove",
    "ScanResult",
    "Scanner",
    "find_moves",
    "hash_local_file",
    "is_blocked",
]

# A file modified this close to its hashing may change again within the same
# mtime tick (2 s on FAT): such a hash is used once, then checked again.
RACY_WINDOW_NS = 2_000_000_000
_MAX_HASH_ATTEMPTS = 3
# Files up to this size are read with one call and hashed in one go.
_SMALL_FILE_BYTES = 1024 * 1024
# Files hashed per task of the hashing pool (a task per file cost more than
# hashing a small one), and a task's bytes: a group ends at whichever comes
# first. Counting files alone put the large set's 8 files of 128 MiB in one
# task, hashed one after the other on one core (A's scan: 1.2 s for 1 GiB).
_HASH_GROUP = 32
_HASH_GROUP_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class LocalFile:
    path: str  # library path (NFC)
    local: str  # on-disk relative name
    size: int
    mtime_ns: int
    inode: int
    content_hash: str


@dataclass(frozen=True, slots=True)
class BlockDigests:
    """A file's raw 4 MiB block digests, and the stat of the file they were read from."""

    size: int
    mtime_ns: int
    inode: int
    digests: tuple[bytes, ...]

    def still_matches(self, st: os.stat_result) -> bool:
        return (st.st_size, st.st_mtime_ns, st.st_ino) == (self.size, self.mtime_ns, self.inode)


@dataclass(frozen=True, slots=True)
class LocalMove:
    from_path: str
    to_path: str


@dataclass(slots=True)
class ScanResult:
    files: dict[str, LocalFile] = field(default_factory=dict)
    moves: list[LocalMove] = field(default_factory=list)
    # Library directory -> its on-disk name, so new files join existing directories.
    dirs: dict[str, str] = field(default_factory=dict)
    # Paths (and directory prefixes ending in '/') that could not be read: never
    # mistaken for deletions.
    blocked: set[str] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)
    hashed: int = 0
    records: list[LocalRecord] = field(default_factory=list)
    # Our temporary download files found on the way (on-disk names).
    partials: list[str] = field(default_factory=list)
    # The rules this scan applied: remote paths they match are left alone too.
    rules: IgnoreRules = field(default_factory=IgnoreRules)
    # Library path -> block digests of the large files this scan read (not
    # those whose hash came from the cache): kept for this pass only.
    blocks: dict[str, BlockDigests] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Seen:
    path: str
    local: str
    size: int
    mtime_ns: int
    inode: int


def _read_small(fd: int, size: int) -> bytes:
    """Up to size + 1 bytes (one more than expected shows growth)."""
    data = os.read(fd, size + 1)
    while len(data) <= size:
        more = os.read(fd, size + 1 - len(data))
        if not more:
            break
        data += more
    return data


@dataclass(frozen=True, slots=True)
class _Hashed:
    content_hash: str
    stat: os.stat_result
    # Only for a file read block by block that did not change while it was read.
    blocks: BlockDigests | None


def hash_local_file(path: Path | str) -> tuple[str, os.stat_result] | None:
    """The content hash and the stat it belongs to; None if the file vanished.

    Re-hashes while the file changes under us (stat before and after differ).
    A small file is read whole with one read (no file object, one block).
    """
    hashed = _hash_local_file(path)
    return None if hashed is None else (hashed.content_hash, hashed.stat)


def _hash_local_file(path: Path | str) -> _Hashed | None:
    for _ in range(_MAX_HASH_ATTEMPTS):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        digests: list[bytes] | None = None
        try:
            before = os.fstat(fd)
            if before.st_size <= _SMALL_FILE_BYTES:
                digest = hash_bytes(_read_small(fd, before.st_size))
            else:
                with open(fd, "rb", buffering=0, closefd=False) as fh:
                    hasher = hash_stream(fh)
                digest, digests = hasher.hexdigest(), hasher.block_digests
            after = os.fstat(fd)
        finally:
            os.close(fd)
        if (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns):
            blocks = None
            if digests is not None:
                blocks = BlockDigests(
                    after.st_size, after.st_mtime_ns, after.st_ino, tuple(digests)
                )
            return _Hashed(digest, after, blocks)
    return _Hashed(digest, after, None)


class Scanner:
    def __init__(
        self,
        root: Path,
        *,
        hash_workers: int = 4,
        clock_ns: Callable[[], int] = time.time_ns,
        keep_blocks_over: int | None = None,
    ) -> None:
        """keep_blocks_over: files larger than this keep their block digests
        (`ScanResult.blocks`); None keeps none."""
        self.root = root
        self._hash_workers = hash_workers
        self._clock_ns = clock_ns
        self._keep_blocks_over = keep_blocks_over

    def scan(
        self, *, synced: Mapping[str, SyncedRecord], cache: Mapping[str, LocalRecord]
    ) -> ScanResult:
        rules = IgnoreRules.for_folder(self.root)
        result = ScanResult(rules=rules)
        aliases = {r.local: r.path for r in synced.values() if r.local != r.path}
        seen = self._walk(rules, aliases, result)
        self._hash(seen, cache=cache, result=result)
        result.moves = find_moves(synced=synced, files=result.files, blocked=result.blocked)
        return result

    # -- the walk -------------------------------------------------------------

    def _walk(self, rules: IgnoreRules, aliases: dict[str, str], result: ScanResult) -> list[_Seen]:
        seen: dict[str, _Seen] = {}
        stack = [""]
        while stack:
            rel_dir = stack.pop()
            try:
                entries = list(os.scandir(self.root / rel_dir if rel_dir else self.root))
            except OSError as exc:
                result.warnings.append(f"cannot list {rel_dir or '.'}: {exc.strerror}")
                result.blocked.add(_nfc(rel_dir) + "/")
                continue
            for entry in sorted(entries, key=lambda e: e.name):
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                match_name = _nfc(rel)
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # vanished since the listing
                if stat.S_ISLNK(st.st_mode):
                    continue  # never followed, never synced
                if stat.S_ISDIR(st.st_mode):
                    if not rules.ignores_dir(match_name):
                        result.dirs.setdefault(match_name, rel)
                        stack.append(rel)
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                if rules.ignores_file(match_name):
                    if entry.name.endswith(PARTIAL_SUFFIX):
                        result.partials.append(rel)
                    continue
                path = aliases.get(rel) or library_path(rel)
                if path is None:
                    result.warnings.append(f"skipped {rel!r}: not a valid library name")
                    continue
                other = seen.get(path)
                if other is not None:
                    # NFC-equal names are one file: keep the canonical spelling.
                    keep_new = rel == path and other.local != path
                    dropped, kept = (other.local, rel) if keep_new else (rel, other.local)
                    result.warnings.append(
                        f"left {dropped!r} alone: the same name as {kept!r} after "
                        "Unicode normalization"
                    )
                    if not keep_new:
                        continue
                seen[path] = _Seen(path, rel, st.st_size, st.st_mtime_ns, st.st_ino)
        return list(seen.values())

    # -- hashing ---------------------------------------------------------------

    def _hash(
        self,
        seen: list[_Seen],
        *,
        cache: Mapping[str, LocalRecord],
        result: ScanResult,
    ) -> None:
        by_inode = {r.inode: r for r in cache.values()}
        todo: list[_Seen] = []
        for item in seen:
            known = _known_hash(item, cache.get(item.path), by_inode)
            if known is None:
                todo.append(item)
                continue
            hash_, checked_ns = known
            self._add(result, item, hash_, checked_ns)
        if not todo:
            return
        root = os.fspath(self.root)

        def hash_group(group: list[_Seen]) -> list[_Hashed | None]:
            return [_hash_local_file(f"{root}/{s.local}") for s in group]

        with ThreadPoolExecutor(max_workers=self._hash_workers) as pool:
            hashed_groups = pool.map(hash_group, _hash_groups(todo))
            hashed_all = (h for hashed_group in hashed_groups for h in hashed_group)
            for item, hashed in zip(todo, hashed_all, strict=True):
                now_ns = self._clock_ns()
                result.hashed += 1
                if hashed is None:
                    continue  # deleted while we looked: absent
                st = hashed.stat
                fresh = _Seen(item.path, item.local, st.st_size, st.st_mtime_ns, st.st_ino)
                self._add(result, fresh, hashed.content_hash, now_ns)
                keep_over = self._keep_blocks_over
                if hashed.blocks is not None and keep_over is not None and st.st_size > keep_over:
                    result.blocks[item.path] = hashed.blocks

    @staticmethod
    def _add(result: ScanResult, item: _Seen, content_hash: str, checked_ns: int) -> None:
        result.files[item.path] = LocalFile(
            item.path, item.local, item.size, item.mtime_ns, item.inode, content_hash
        )
        result.records.append(
            LocalRecord(
                item.path,
                item.local,
                item.size,
                item.mtime_ns,
                item.inode,
                content_hash,
                checked_ns,
            )
        )


def _hash_groups(todo: list[_Seen]) -> list[list[_Seen]]:
    """`todo` in order, cut into tasks of at most _HASH_GROUP files or about
    _HASH_GROUP_BYTES."""
    groups: list[list[_Seen]] = []
    group: list[_Seen] = []
    group_bytes = 0
    for item in todo:
        group.append(item)
        group_bytes += item.size
        if len(group) >= _HASH_GROUP or group_bytes >= _HASH_GROUP_BYTES:
            groups.append(group)
            group, group_bytes = [], 0
    if group:
        groups.append(group)
    return groups


def _same_stat(item: _Seen, size: int, mtime_ns: int, inode: int) -> bool:
    return (item.size, item.mtime_ns, item.inode) == (size, mtime_ns, inode)


def _known_hash(
    item: _Seen, cached: LocalRecord | None, by_inode: Mapping[int, LocalRecord]
) -> tuple[str, int] | None:
    """The hash we can trust without reading the file, with when it was checked."""
    for record in (cached, by_inode.get(item.inode)):
        if (
            record is not None
            and _same_stat(item, record.size, record.mtime_ns, record.inode)
            and record.mtime_ns < record.checked_ns - RACY_WINDOW_NS
        ):
            return record.content_hash, record.checked_ns
    return None


def find_moves(
    *,
    synced: Mapping[str, SyncedRecord],
    files: Mapping[str, LocalFile],
    blocked: set[str] | frozenset[str] = frozenset(),
) -> list[LocalMove]:
    """Pair synced paths that vanished with new paths: by inode, then by content."""
    vanished = [p for p in sorted(synced) if p not in files and not is_blocked(p, blocked)]
    appeared = [p for p in sorted(files) if p not in synced]
    if not vanished or not appeared:
        return []
    moves: list[LocalMove] = []
    by_inode = {synced[p].inode: p for p in vanished}
    taken_from: set[str] = set()
    rest: list[str] = []
    for to_path in appeared:
        from_path = by_inode.get(files[to_path].inode)
        if (
            from_path is not None
            and from_path not in taken_from
            and synced[from_path].content_hash == files[to_path].content_hash
        ):
            taken_from.add(from_path)
            moves.append(LocalMove(from_path, to_path))
        else:
            rest.append(to_path)
    by_hash: dict[str, list[str]] = defaultdict(list)
    for p in vanished:
        if p not in taken_from and synced[p].content_hash != EMPTY_HASH:
            by_hash[synced[p].content_hash].append(p)
    for to_path in rest:
        candidates = by_hash.get(files[to_path].content_hash)
        if candidates:
            moves.append(LocalMove(candidates.pop(0), to_path))
    return moves


def is_blocked(path: str, blocked: set[str] | frozenset[str]) -> bool:
    if path in blocked or "/" in blocked:  # "/": the folder itself could not be listed
        return True
    return any(prefix.endswith("/") and path.startswith(prefix) for prefix in blocked)


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)
