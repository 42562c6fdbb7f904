"""Set-up the client tests share: downloaders as the engine builds them, one
sync pass of a folder, and a folder's files by content hash."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from shelfsync.client.batch_download import BatchDownloader
from shelfsync.client.download import Downloader
from shelfsync.client.http import ApiClient
from shelfsync.client.progress import QuietReporter
from shelfsync.client.state import State
from shelfsync.client.sync import PassSummary, SyncEngine
from shelfsync.client.transfer import TransferCounters, TransferSettings
from shelfsync.content_hash import hash_file


def single_downloader(
    root: Path, api: ApiClient, state: State, counters: TransferCounters | None = None
) -> Downloader:
    return Downloader(
        root=root,
        api=api,
        state=state,
        settings=TransferSettings(),
        counters=counters or TransferCounters(),
        reporter=QuietReporter(io.StringIO()),
    )


def batch_downloader(
    root: Path, api: ApiClient, single: Downloader, pool: ThreadPoolExecutor
) -> BatchDownloader:
    return BatchDownloader(
        root=root,
        api=api,
        downloader=single,
        settings=TransferSettings(),
        counters=TransferCounters(),
        reporter=QuietReporter(io.StringIO()),
        pool=pool,
    )


def run_pass(api: ApiClient, folder: Path) -> PassSummary:
    """One `shelfsync sync` pass of the folder, quietly."""
    with (
        State(folder) as state,
        SyncEngine(
            root=folder, api=api, state=state, reporter=QuietReporter(io.StringIO())
        ) as engine,
    ):
        return engine.run_pass()


def tree(folder: Path) -> dict[str, str]:
    """The folder's files (its state folder left out), path -> content hash."""
    return {
        p.relative_to(folder).as_posix(): hash_file(p)
        for p in folder.rglob("*")
        if p.is_file() and ".shelfsync" not in p.parts
    }
