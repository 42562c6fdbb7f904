"""Batch upload and download (batch_upload.py, batch_download.py), against the real
app in process (its ASGI transport: conftest.py), and the sync engine using them."""

from __future__ import annotations

import io
import os
import random
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from shelfsync.client.batch_download import BatchDownloader
from shelfsync.client.batch_upload import BatchUploader
from shelfsync.client.download import Downloader, DownloadJob, DownloadOutcome, Outcome
from shelfsync.client.http import ApiClient
from shelfsync.client.progress import QuietReporter
from shelfsync.client.state import State
from shelfsync.client.transfer import TransferCounters, TransferSettings
from shelfsync.client.upload import UploadJob
from shelfsync.content_hash import hash_bytes, hash_file
from shelfsync.protocol.sync import ReportResult
from tests.client.helpers import batch_downloader, run_pass, single_downloader, tree


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as executor:
        yield executor


def write(folder: Path, rel: str, data: bytes) -> UploadJob:
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    st = path.stat()
    return UploadJob(rel, path, hash_bytes(data), len(data), st.st_mtime_ns, None)


def uploader(api: ApiClient, pool: ThreadPoolExecutor) -> BatchUploader:
    return BatchUploader(
        api=api,
        settings=TransferSettings(),
        counters=TransferCounters(),
        reporter=QuietReporter(io.StringIO()),
        pool=pool,
    )


def no_fallback(job: UploadJob) -> ReportResult | None:
    raise AssertionError(f"{job.path} went the chunked way")


def test_batch_upload_lands_files_and_skips_one_edited_since_the_scan(
    tmp_path: Path, make_api: Callable[[str], ApiClient], pool: ThreadPoolExecutor
) -> None:
    api = make_api("laptop")
    rng = random.Random(1)
    jobs = [write(tmp_path, f"d/{i}.txt", rng.randbytes(100 + i)) for i in range(30)]
    (tmp_path / "d/7.txt").write_bytes(b"edited after the scan")
    landed = {
        job.path: result for job, result in uploader(api, pool).upload_many(jobs, no_fallback)
    }
    assert landed.pop("d/7.txt") is None
    assert all(isinstance(r, ReportResult) and r.status == "applied" for r in landed.values())
    feed = api.changes(cursor=None).changes
    assert {c.path: c.content_hash for c in feed} == {
        j.path: j.content_hash for j in jobs if j.path != "d/7.txt"
    }


def test_batch_upload_falls_back_to_single_uploads_where_the_server_lacks_batches(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/auth/device":
            grant = {"access_token": "t", "token_type": "Bearer", "expires_in": 900}
            return httpx.Response(200, json={**grant, "device_id": "d"})
        body = {"title": "Not Found", "status": 404, "detail": "no", "code": "not_found"}
        return httpx.Response(404, json=body)

    api = ApiClient("http://x", device_token="tok", transport=httpx.MockTransport(route))
    jobs = [write(tmp_path, f"{i}", bytes([i]) * 10) for i in range(3)]
    done = ReportResult(path="x", status="applied", id="i", revision=1, seq=1)
    taken: list[str] = []

    def fallback(job: UploadJob) -> ReportResult | None:
        taken.append(job.path)
        return done

    results = list(uploader(api, pool).upload_many(jobs, fallback))
    assert taken == ["0", "1", "2"]
    assert [r for _, r in results] == [done] * 3


def downloader_for(
    root: Path, api: ApiClient, pool: ThreadPoolExecutor
) -> tuple[BatchDownloader, Downloader]:
    single = single_downloader(root, api, State(root))
    return batch_downloader(root, api, single, pool), single


def test_batch_download_places_verified_files_and_leaves_local_edits_alone(
    tmp_path: Path, make_api: Callable[[str], ApiClient], pool: ThreadPoolExecutor
) -> None:
    laptop, phone = make_api("laptop"), make_api("phone")
    source = tmp_path / "a"
    rng = random.Random(2)
    jobs = [write(source, f"x/{i}.bin", rng.randbytes(50 * i + 1)) for i in range(12)]
    list(uploader(laptop, pool).upload_many(jobs, no_fallback))
    feed = {c.path: c for c in phone.changes(cursor=None).changes}
    root = (tmp_path / "b").resolve()
    root.mkdir()
    (root / "x").mkdir()
    (root / "x/3.bin").write_bytes(b"a local file that appeared meanwhile")
    wanted = [
        DownloadJob(p, p, c.id, c.revision, c.content_hash or "", c.size, None, None, None)
        for p, c in sorted(feed.items())
    ]
    # One entry whose content the feed described differently: changed meanwhile.
    stale = DownloadJob("x/5.bin", "x/5.bin", "i", 1, "0" * 64, 10, None, None, None)
    wanted = [j for j in wanted if j.path != "x/5.bin"] + [stale]
    batch, single = downloader_for(root, phone, pool)
    outcomes = {job.path: done for job, done in batch.download_many(wanted, single.download)}
    kinds = {p: d.outcome for p, d in outcomes.items() if isinstance(d, DownloadOutcome)}
    assert len(kinds) == len(outcomes)  # no errors
    assert kinds.pop("x/3.bin") is Outcome.LOCAL_CHANGED
    assert kinds.pop("x/5.bin") is Outcome.REMOTE_CHANGED
    for path, kind in kinds.items():
        assert kind is Outcome.DONE
        assert hash_file(root / path) == feed[path].content_hash
    assert (root / "x/3.bin").read_bytes() == b"a local file that appeared meanwhile"
    assert not list(root.rglob("*.shelfsync-part"))


def sync_folder(api: ApiClient, folder: Path) -> None:
    summary = run_pass(api, folder)
    assert summary.settled, summary
    assert not summary.failed, summary


def test_two_devices_converge_with_small_files_batched_and_a_large_one_chunked(
    tmp_path: Path, make_api: Callable[[str], ApiClient]
) -> None:
    laptop, phone = make_api("laptop"), make_api("phone")
    a, b = (tmp_path / "a").resolve(), (tmp_path / "b").resolve()
    a.mkdir()
    b.mkdir()
    rng = random.Random(3)
    for i in range(40):
        write(a, f"dir{i % 4}/f{i}.txt", rng.randbytes(rng.randint(0, 3000)))
    write(a, "same1", b"twice")
    write(a, "same2", b"twice")
    write(a, "big.bin", rng.randbytes(5 * 1024 * 1024))
    sync_folder(laptop, a)
    sync_folder(phone, b)
    assert tree(b) == tree(a)
    # Edits both ways, then both settle again.
    write(b, "dir0/f0.txt", b"edited on the phone")
    os.unlink(b / "dir1/f1.txt")
    sync_folder(phone, b)
    sync_folder(laptop, a)
    assert tree(a) == tree(b)
    assert (a / "dir0/f0.txt").read_bytes() == b"edited on the phone"
