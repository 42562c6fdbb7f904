"""Small files go up many at a time (protocol section 11.4).

A file of at most `BATCH_FILE_BYTES` whose content the server asked for is
read whole, checked against the hash its report named (an edit since the scan
leaves it for the next round), and put into a batch: up to `BATCH_FILES` files
or `BATCH_BYTES` of them, one request each, `PARALLEL_BATCHES` in flight. The
server answers one report result per file, exactly as an upload's `complete`
would, so the caller handles them like single uploads. Nothing is recorded
before the answer: a batch lost midway is simply asked for again by the next
pass's report (`upload_required`), and a retried batch answers `unchanged`.

A server without the endpoint (404, 405, 415) or with smaller limits (413)
gets those files through the chunked path instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from shelfsync.client.errors import ApiError, ClientError, ServerUnreachable
from shelfsync.client.http import ApiClient
from shelfsync.client.progress import Reporter
from shelfsync.client.transfer import TransferCounters, TransferSettings
from shelfsync.client.upload import UploadJob, mtime_datetime
from shelfsync.content_hash import hash_bytes
from shelfsync.protocol.batch import frame
from shelfsync.protocol.sync import ReportResult

__all__ = [
    "BATCH_BYTES",
    "BATCH_FILES",
    "BATCH_FILE_BYTES",
    "PARALLEL_BATCHES",
    "BatchUploader",
    "Landed",
]

BATCH_FILE_BYTES = 4 * 1024 * 1024  # larger files go in chunks (server default limit: 8 MiB)
BATCH_FILES = 500  # per request (server default limit: 1000)
BATCH_BYTES = 16 * 1024 * 1024  # file bytes per request (server default limit: 64 MiB)
PARALLEL_BATCHES = 2
# Answers that mean "not here, or not like this": send those files in chunks.
_FALLBACK_STATUSES = frozenset({404, 405, 413, 415})

# The outcome of one file: its result, None when it changed since the scan, or
# the error that stopped it.
Landed = tuple[UploadJob, ReportResult | Exception | None]


@dataclass(frozen=True, slots=True)
class _Ready:
    job: UploadJob
    data: bytes


def _read_checked(job: UploadJob) -> bytes | None:
    """The file's bytes if it still has the content its report named."""
    try:
        fd = os.open(job.file, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    try:
        data = os.read(fd, job.size + 1)
        while 0 < len(data) <= job.size:
            more = os.read(fd, job.size + 1 - len(data))
            if not more:
                break
            data += more
    except IsADirectoryError:
        return None
    finally:
        os.close(fd)
    if len(data) != job.size:
        return None
    return data if hash_bytes(data) == job.content_hash else None


def _manifest_entry(job: UploadJob) -> dict[str, object]:
    """A `BatchFile` as JSON (the server validates it; a model per file cost more)."""
    return {
        "path": job.path,
        "size": job.size,
        "content_hash": job.content_hash,
        "base_revision": job.base_revision,
        "mtime": mtime_datetime(job.mtime_ns).isoformat(),
    }


def _groups(jobs: Sequence[UploadJob]) -> list[list[UploadJob]]:
    groups: list[list[UploadJob]] = []
    current: list[UploadJob] = []
    size = 0
    for job in jobs:
        if current and (len(current) >= BATCH_FILES or size + job.size > BATCH_BYTES):
            groups.append(current)
            current, size = [], 0
        current.append(job)
        size += job.size
    if current:
        groups.append(current)
    return groups


class BatchUploader:
    def __init__(
        self,
        *,
        api: ApiClient,
        settings: TransferSettings,
        counters: TransferCounters,
        reporter: Reporter,
        pool: ThreadPoolExecutor,
    ) -> None:
        self._api = api
        self._settings = settings
        self._counters = counters
        self._reporter = reporter
        self._pool = pool

    @staticmethod
    def fits(job: UploadJob) -> bool:
        return job.size <= BATCH_FILE_BYTES

    def upload_many(
        self, jobs: Sequence[UploadJob], fallback: Callable[[UploadJob], ReportResult | None]
    ) -> Iterator[Landed]:
        """Every job's outcome, batch by batch as they are answered."""
        groups = _groups(jobs)
        for start in range(0, len(groups), PARALLEL_BATCHES):
            futures = [
                self._pool.submit(self._send, group)
                for group in groups[start : start + PARALLEL_BATCHES]
            ]
            for group, future in zip(groups[start:], futures, strict=False):
                try:
                    landed = future.result()
                except ServerUnreachable:
                    raise
                except ApiError as exc:
                    if exc.problem.status in _FALLBACK_STATUSES:
                        landed = self._one_by_one(group, fallback)
                    else:
                        landed = [(job, exc) for job in group]
                except (ClientError, OSError) as exc:
                    landed = [(job, exc) for job in group]
                yield from landed

    def _one_by_one(
        self, group: list[UploadJob], fallback: Callable[[UploadJob], ReportResult | None]
    ) -> list[Landed]:
        out: list[Landed] = []
        for job in group:
            try:
                out.append((job, fallback(job)))
            except ServerUnreachable:
                raise
            except (ApiError, ClientError, OSError) as exc:
                out.append((job, exc))
        return out

    def _send(self, group: list[UploadJob]) -> list[Landed]:
        out: list[Landed] = []
        ready: list[_Ready] = []
        for job in group:
            try:
                data = _read_checked(job)
            except OSError as exc:
                out.append((job, exc))
                continue
            if data is None:
                out.append((job, None))  # edited since the scan: the next round
            else:
                ready.append(_Ready(job, data))
        if not ready:
            return out
        manifest = {"files": [_manifest_entry(r.job) for r in ready]}
        header = frame(json.dumps(manifest, separators=(",", ":")).encode())
        body = b"".join([header, *(r.data for r in ready)])
        self._settings.throttle.take(len(body))
        results = self._api.upload_batch(body)
        if len(results) != len(ready):
            raise ClientError(
                f"the server answered {len(results)} results for a batch of {len(ready)}"
            )
        sent = sum(r.job.size for r in ready)
        self._counters.add(uploaded_files=len(ready), uploaded_bytes=sent)
        transfer = self._reporter.transfer(
            verb="uploaded", path=f"a batch of {len(ready)} file(s)", size_bytes=sent
        )
        transfer.advance(sent)
        transfer.done()
        out += [(r.job, result) for r, result in zip(ready, results, strict=True)]
        return out
