"""The sync client's Uploader against the real app (in process, and on a real
uvicorn server reading chunk bodies straight into aligned buffers): block-sized
chunks whose Content-Digest is the block digest of the check, and a file edited
after the check refused by the server and abandoned by the client."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shelfsync.client import upload as upload_module
from shelfsync.client.errors import NotFound
from shelfsync.client.http import ApiClient
from shelfsync.client.progress import QuietReporter
from shelfsync.client.state import State
from shelfsync.client.transfer import TransferCounters, TransferSettings
from shelfsync.client.upload import Uploader, UploadJob
from shelfsync.content_hash import BLOCK_SIZE, hash_file
from shelfsync.protocol.uploads import UploadSession
from shelfsync.server.api.http_protocol import BodyPiecesProtocol
from tests.api.conftest import Account
from tests.api.live_server import LiveServer, body_threads_taken

V1 = "/api/v1/sync"


class _InProcess(httpx.BaseTransport):
    """The TestClient's transport, with each answer read whole (httpx.Client
    wants a sync byte stream)."""

    def __init__(self, client: TestClient) -> None:
        self._inner = client._transport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        body = response.read()
        return httpx.Response(response.status_code, headers=response.headers, content=body)


# In process (the chunk read from ASGI messages), over loopback from `shelfsync
# serve`'s uvicorn protocol (read by a body thread straight into the route's
# aligned buffers, api/http_protocol.py), and the same with every body thread
# taken (the route falls back to ASGI messages).
@pytest.fixture(params=["in-process", "live", "live-threads-taken"])
def api(
    request: pytest.FixtureRequest, app: FastAPI, client: TestClient, alice: Account
) -> Iterator[ApiClient]:
    created = client.post(f"{V1}/devices", json={"name": "laptop"}, headers=alice.headers)
    assert created.status_code == 200, created.text
    token = created.json()["token"]
    if request.param == "in-process":
        with ApiClient(
            str(client.base_url), device_token=token, transport=_InProcess(client)
        ) as api:
            yield api
        return
    with contextlib.ExitStack() as stack:
        if request.param == "live-threads-taken":
            stack.enter_context(body_threads_taken())
        live = stack.enter_context(LiveServer(app, BodyPiecesProtocol))
        yield stack.enter_context(ApiClient(live.url, device_token=token))


@pytest.fixture
def uploader(api: ApiClient, tmp_path: Path) -> Iterator[Uploader]:
    folder = tmp_path / "folder"
    folder.mkdir()
    with State(folder) as state, ThreadPoolExecutor(4) as pool:
        yield Uploader(
            api=api,
            state=state,
            settings=TransferSettings(),
            counters=TransferCounters(),
            reporter=QuietReporter(),
            chunk_pool=pool,
        )


def _job(path: Path, name: str) -> UploadJob:
    return UploadJob(
        path=name,
        file=path,
        content_hash=hash_file(path),
        size=path.stat().st_size,
        mtime_ns=path.stat().st_mtime_ns,
        base_revision=None,
    )


def test_large_file_goes_up_in_block_sized_chunks(
    uploader: Uploader, api: ApiClient, tmp_path: Path
) -> None:
    data = os.urandom(2 * BLOCK_SIZE + 12345)  # over the 8 MiB small-file limit
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    job = _job(source, "big.bin")
    sessions: list[UploadSession] = []
    create = api.create_upload

    def spy(body):  # type: ignore[no-untyped-def]
        sessions.append(create(body))
        return sessions[-1]

    api.create_upload = spy  # type: ignore[method-assign]
    result = uploader.upload(job)
    assert result is not None
    assert result.status == "applied"
    assert (sessions[0].chunk_size, sessions[0].chunk_count) == (BLOCK_SIZE, 3)
    with api.download("big.bin") as stream:
        assert stream.headers["etag"] == f'"{job.content_hash}"'
        assert b"".join(stream.iter_bytes()) == data


def test_a_file_edited_after_the_check_is_refused_and_abandoned(
    uploader: Uploader, api: ApiClient, tmp_path: Path
) -> None:
    source = tmp_path / "edited.bin"
    source.write_bytes(os.urandom(3 * BLOCK_SIZE))
    job = _job(source, "edited.bin")
    sessions: list[UploadSession] = []
    create = api.create_upload

    def edit_after_check(body):  # type: ignore[no-untyped-def]
        # The check has hashed the file; now it changes (same size).
        with source.open("r+b") as fh:
            fh.seek(BLOCK_SIZE + 10)
            fh.write(b"edited!")
        sessions.append(create(body))
        return sessions[-1]

    api.create_upload = edit_after_check  # type: ignore[method-assign]
    assert uploader.upload(job) is None  # changed: the next round reports it
    # The server kept nothing of the edited chunk, the session is gone, and no
    # file landed.
    with pytest.raises(NotFound):
        api.get_upload(sessions[0].id)
    with pytest.raises(NotFound), api.download("edited.bin"):
        pass


@pytest.fixture
def multi_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """Multi-block chunks from 3 blocks on (the real threshold is 64 MiB)."""
    monkeypatch.setattr(upload_module, "_MULTI_BLOCK_FILE_BYTES", 3 * BLOCK_SIZE)
    monkeypatch.setattr(upload_module, "_LARGE_CHUNK", 2 * BLOCK_SIZE)


def _spy_puts(api: ApiClient) -> list[str | None]:
    digests: list[str | None] = []
    put = api.put_chunk

    def spy(session_id, *, index, data, content_digest):  # type: ignore[no-untyped-def]
        digests.append(content_digest)
        return put(session_id, index=index, data=data, content_digest=content_digest)

    api.put_chunk = spy  # type: ignore[method-assign]
    return digests


@pytest.mark.usefixtures("multi_block")
def test_a_large_file_goes_up_in_multi_block_chunks_checked_by_block_hashes(
    uploader: Uploader, api: ApiClient, tmp_path: Path
) -> None:
    data = os.urandom(3 * BLOCK_SIZE + 777)
    source = tmp_path / "large.bin"
    source.write_bytes(data)
    job = _job(source, "large.bin")
    digests = _spy_puts(api)
    result = uploader.upload(job)
    assert result is not None
    assert result.status == "applied"
    # Two chunks of two blocks, no Content-Digest: the server checks each block
    # against the block_hashes the session was created with.
    assert digests == [None, None]
    with api.download("large.bin") as stream:
        assert b"".join(stream.iter_bytes()) == data


@pytest.mark.usefixtures("multi_block")
def test_a_large_file_edited_after_the_check_is_refused_by_its_block_hashes(
    uploader: Uploader, api: ApiClient, tmp_path: Path
) -> None:
    source = tmp_path / "edited-large.bin"
    source.write_bytes(os.urandom(4 * BLOCK_SIZE))
    job = _job(source, "edited-large.bin")
    sessions: list[UploadSession] = []
    create = api.create_upload

    def edit_after_check(body):  # type: ignore[no-untyped-def]
        with source.open("r+b") as fh:
            fh.seek(3 * BLOCK_SIZE + 10)  # the second chunk's second block
            fh.write(b"edited!")
        sessions.append(create(body))
        return sessions[-1]

    api.create_upload = edit_after_check  # type: ignore[method-assign]
    assert uploader.upload(job) is None
    assert sessions[0].chunk_size == 2 * BLOCK_SIZE
    with pytest.raises(NotFound):
        api.get_upload(sessions[0].id)
    with pytest.raises(NotFound), api.download("edited-large.bin"):
        pass
