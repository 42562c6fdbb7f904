"""A large file the scan just hashed goes up without being read again to hash it
(the Uploader takes the scan's block digests while the file keeps its stat),
and an edit made after the scan is still refused with nothing stored."""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shelfsync.client import upload as upload_module
from shelfsync.client.errors import NotFound
from shelfsync.client.http import ApiClient
from shelfsync.client.progress import QuietReporter
from shelfsync.client.scan import Scanner
from shelfsync.client.state import State
from shelfsync.client.sync import SyncEngine
from shelfsync.client.transfer import TransferCounters, TransferSettings
from shelfsync.client.upload import CHUNKED_OVER_BYTES, Uploader, UploadJob
from shelfsync.content_hash import BLOCK_SIZE
from shelfsync.protocol.uploads import UploadCreate, UploadSession

BIG = 2 * BLOCK_SIZE + 12345  # over CHUNKED_OVER_BYTES: three blocks
assert BIG > CHUNKED_OVER_BYTES


@pytest.fixture(params=["block-chunks", "multi-block-chunks"])
def chunking(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Chunks of one block (Content-Digest each) or of two (checked by block_hashes;
    the real threshold for those is 64 MiB)."""
    if request.param == "multi-block-chunks":
        monkeypatch.setattr(upload_module, "_MULTI_BLOCK_FILE_BYTES", 3 * BLOCK_SIZE)
        monkeypatch.setattr(upload_module, "_LARGE_CHUNK", 2 * BLOCK_SIZE)
    return str(request.param)


@pytest.fixture
def hashed_blocks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The blocks the Uploader reads to hash them."""
    indexes: list[int] = []
    real = upload_module._hash_block

    def spy(fd: int, index: int) -> tuple[bytes, int]:
        indexes.append(index)
        return real(fd, index)

    monkeypatch.setattr(upload_module, "_hash_block", spy)
    return indexes


@pytest.fixture
def api(make_api: Callable[[str], ApiClient]) -> ApiClient:
    return make_api("laptop")


@pytest.fixture
def sessions(api: ApiClient) -> list[UploadSession]:
    """The upload sessions the client creates."""
    created: list[UploadSession] = []
    create = api.create_upload

    def spy(body: UploadCreate) -> UploadSession:
        created.append(create(body))
        return created[-1]

    api.create_upload = spy  # type: ignore[method-assign]
    return created


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = (tmp_path / "folder").resolve()
    path.mkdir()
    return path


@pytest.fixture
def uploader(api: ApiClient, folder: Path) -> Iterator[Uploader]:
    with State(folder) as state, ThreadPoolExecutor(4) as pool:
        yield Uploader(
            api=api,
            state=state,
            settings=TransferSettings(),
            counters=TransferCounters(),
            reporter=QuietReporter(io.StringIO()),
            chunk_pool=pool,
        )


def scanned_job(folder: Path, name: str) -> UploadJob:
    scan = Scanner(folder, keep_blocks_over=CHUNKED_OVER_BYTES).scan(synced={}, cache={})
    f = scan.files[name]
    job = UploadJob(
        name, folder / f.local, f.content_hash, f.size, f.mtime_ns, None, scan.blocks.get(name)
    )
    assert job.scanned is not None
    return job


def edit_in_place(path: Path, *, keep_mtime: bool) -> bytes:
    """Same size and inode, other bytes in the second block; returns the new content."""
    before = path.stat()
    with path.open("r+b") as fh:
        fh.seek(BLOCK_SIZE + 10)
        fh.write(b"edited!")
    if keep_mtime:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    else:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
    after = path.stat()
    assert (after.st_size, after.st_ino) == (before.st_size, before.st_ino)
    assert (after.st_mtime_ns == before.st_mtime_ns) is keep_mtime
    return path.read_bytes()


def download(api: ApiClient, path: str) -> bytes:
    with api.download(path) as stream:
        return b"".join(stream.iter_bytes())


def sync(api: ApiClient, folder: Path, *, after_scan: Callable[[], object] | None = None) -> None:
    with (
        State(folder) as state,
        SyncEngine(
            root=folder, api=api, state=state, reporter=QuietReporter(io.StringIO())
        ) as engine,
    ):
        if after_scan is not None:
            scan = engine.scan

            def scan_then_edit():  # type: ignore[no-untyped-def]
                result = scan()
                after_scan()
                return result

            engine.scan = scan_then_edit  # type: ignore[method-assign]
        summary = engine.run_pass()
    assert summary.settled, summary
    assert not summary.failed, summary


@pytest.mark.usefixtures("chunking")
def test_a_large_file_just_scanned_is_not_hashed_again_to_go_up(
    api: ApiClient, folder: Path, hashed_blocks: list[int], sessions: list[UploadSession]
) -> None:
    data = os.urandom(BIG)
    (folder / "big.bin").write_bytes(data)
    sync(api, folder)
    assert hashed_blocks == []
    assert len(sessions) == 1
    assert download(api, "big.bin") == data


def test_a_large_file_without_the_scans_digests_is_read_and_checked_as_before(
    uploader: Uploader, api: ApiClient, folder: Path, hashed_blocks: list[int]
) -> None:
    # As when its hash came from the scan cache (digests are not kept there).
    data = os.urandom(BIG)
    (folder / "big.bin").write_bytes(data)
    job = dataclasses.replace(scanned_job(folder, "big.bin"), scanned=None)
    result = uploader.upload(job)
    assert result is not None
    assert result.status == "applied"
    assert sorted(hashed_blocks) == [0, 1, 2]
    assert download(api, "big.bin") == data


@pytest.mark.usefixtures("chunking")
def test_an_edit_after_the_scan_keeping_the_stat_is_refused_by_the_server(
    uploader: Uploader,
    api: ApiClient,
    folder: Path,
    hashed_blocks: list[int],
    sessions: list[UploadSession],
) -> None:
    (folder / "big.bin").write_bytes(os.urandom(BIG))
    job = scanned_job(folder, "big.bin")
    edit_in_place(folder / "big.bin", keep_mtime=True)
    assert uploader.upload(job) is None  # changed since the scan: the next round reports it
    assert hashed_blocks == []  # the scan's digests were taken...
    # ... and the server refused the edited block: session gone, nothing landed.
    with pytest.raises(NotFound):
        api.get_upload(sessions[0].id)
    with pytest.raises(NotFound):
        download(api, "big.bin")


@pytest.mark.usefixtures("chunking")
def test_a_file_cut_short_while_its_chunks_go_up_lands_nothing(
    uploader: Uploader, api: ApiClient, folder: Path, sessions: list[UploadSession]
) -> None:
    # Chunks checked by the server are read as they are sent: a file that got
    # shorter after its session was made ends their request early.
    source = folder / "big.bin"
    source.write_bytes(os.urandom(BIG))
    job = scanned_job(folder, "big.bin")
    create = api.create_upload

    def create_then_cut(body: UploadCreate) -> UploadSession:
        session = create(body)
        with source.open("r+b") as fh:
            fh.truncate(BLOCK_SIZE // 2)
        return session

    api.create_upload = create_then_cut  # type: ignore[method-assign]
    assert uploader.upload(job) is None  # changed since the scan: the next round reports it
    with pytest.raises(NotFound):
        download(api, "big.bin")


def test_an_edit_after_the_scan_changing_the_mtime_is_caught_before_any_session(
    uploader: Uploader,
    api: ApiClient,
    folder: Path,
    hashed_blocks: list[int],
    sessions: list[UploadSession],
) -> None:
    (folder / "big.bin").write_bytes(os.urandom(BIG))
    job = scanned_job(folder, "big.bin")
    edit_in_place(folder / "big.bin", keep_mtime=False)
    assert uploader.upload(job) is None
    assert sorted(hashed_blocks) == [0, 1, 2]  # read and checked, as without the scan's digests
    assert sessions == []
    with pytest.raises(NotFound):
        download(api, "big.bin")


@pytest.mark.parametrize("keep_mtime", [True, False], ids=["same-mtime", "new-mtime"])
def test_a_pass_whose_large_file_is_edited_after_its_scan_lands_the_edit(
    api: ApiClient, folder: Path, keep_mtime: bool
) -> None:
    source = folder / "big.bin"
    source.write_bytes(os.urandom(BIG))
    edited: list[bytes] = []

    def edit_once() -> None:
        if not edited:
            edited.append(edit_in_place(source, keep_mtime=keep_mtime))

    sync(api, folder, after_scan=edit_once)
    assert download(api, "big.bin") == edited[0] == source.read_bytes()
