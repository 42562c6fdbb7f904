"""`kill -9` in the middle of a large upload and of a large download, then resume.

The client runs with a real bandwidth limit (SHELFSYNC_LIMIT_RATE) so it is
still transferring when it is killed. The proof comes from outside the client:
the server's upload session (`received`) and the partial file on disk, compared
with the byte counters of the run that finishes the job.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from tests.e2e.harness import Device, Server, wait_until

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
SIZE = 64 * MiB
RATE = str(12 * MiB)


def test_killed_upload_resumes_without_resending_acknowledged_chunks(
    server: Server, make_device: Callable[..., Device]
) -> None:
    a, b = make_device("A"), make_device("B")
    data = os.urandom(SIZE)
    a.write("video/holiday.mkv", data)
    process = a.spawn("sync", str(a.folder), SHELFSYNC_LIMIT_RATE=RATE)

    def session_id() -> str | None:
        rows = a.state_rows("SELECT session_id FROM uploads")
        return str(rows[0][0]) if rows else None

    wait_until(lambda: session_id() is not None, timeout_s=60, what="an upload session")
    sid = session_id()
    with a.api() as client:

        def received() -> list[int]:
            return list(client.get(f"/api/v1/sync/upload/{sid}").json()["received"])

        wait_until(lambda: len(received()) >= 2, timeout_s=60, what="two chunks on the server")
        process.kill()  # SIGKILL: no cleanup of any kind
        process.wait()
        # A chunk whose bytes were all on the wire may still land just after
        # (on a loaded machine its fdatasync can take seconds): wait for the
        # session to stay unchanged for two seconds.
        settled: list[list[int]] = [received()]

        def stable() -> bool:
            settled.append(received())
            return len(settled) >= 5 and all(s == settled[-1] for s in settled[-5:])

        wait_until(stable, timeout_s=30, step_s=0.5, what="the session to settle")
        session = client.get(f"/api/v1/sync/upload/{sid}").json()
    held = session["received"]
    assert session["status"] == "pending"
    count, chunk_size = session["chunk_count"], session["chunk_size"]
    assert 0 < len(held) < count, session

    summary = a.sync()
    # Every chunk the server acknowledged stayed there; only the rest travelled.
    # A straggler that landed after the snapshot counts as already there too.
    there, sent = summary["chunks_already_there"], summary["chunks_sent"]
    assert there >= len(held)
    assert there <= len(held) + 1, (summary, held)
    assert there + sent == count
    missing = [i for i in range(count) if i not in held]
    missing_bytes = sum(min(chunk_size, SIZE - i * chunk_size) for i in missing)
    if there == len(held):
        assert summary["uploaded_bytes"] == missing_bytes
    else:
        assert missing_bytes - chunk_size <= summary["uploaded_bytes"] < missing_bytes
    with a.api() as client:
        assert client.get(f"/api/v1/sync/upload/{sid}").json()["status"] == "completed"
    b.sync()
    assert (b.folder / "video/holiday.mkv").read_bytes() == data
    assert b.tree() == a.tree() == server.library(a)


def test_killed_download_resumes_with_a_range_request(
    server: Server, make_device: Callable[..., Device]
) -> None:
    a, b = make_device("A"), make_device("B")
    data = os.urandom(SIZE)
    a.write("music/album.flac", data)
    a.sync()
    process = b.spawn("sync", str(b.folder), SHELFSYNC_LIMIT_RATE=RATE)

    def partial_bytes() -> int:
        folder = b.folder / "music"
        parts = list(folder.glob("*.shelfsync-part")) if folder.is_dir() else []
        return parts[0].stat().st_size if parts else 0

    wait_until(lambda: partial_bytes() >= 16 * MiB, timeout_s=60, what="16 MiB downloaded")
    process.kill()
    process.wait()
    have = partial_bytes()
    assert 0 < have < SIZE
    assert not (b.folder / "music/album.flac").exists()  # never a half file in place

    summary = b.sync()
    assert summary["resumed_download_bytes"] == have
    assert summary["downloaded_bytes"] == SIZE - have
    assert (b.folder / "music/album.flac").read_bytes() == data
    assert b.tree() == a.tree() == server.library(a)
    assert partial_bytes() == 0  # the temporary file became the file
