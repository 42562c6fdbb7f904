"""http.py's connections: every one writes request bodies without copying them, and
large single-file downloads read the socket in pieces of up to 1 MiB (not
httpcore's 64 KiB), through their own client. The streams are checked against
recording fakes and a real socket, uploads and downloads against the real app
served by uvicorn on a loopback socket."""

from __future__ import annotations

import collections
import contextlib
import random
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpcore
import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from shelfsync.client.download import DownloadJob, Outcome
from shelfsync.client.errors import NotFound, ServerUnreachable
from shelfsync.client.http import (
    WIDE_DOWNLOAD_MIN_BYTES,
    WIDE_READ_BYTES,
    ApiClient,
    DownloadStream,
    RetryPolicy,
    TunedBackend,
    TunedStream,
    TunedTransport,
)
from shelfsync.client.state import State
from shelfsync.client.transfer import TransferCounters
from shelfsync.content_hash import hash_bytes
from shelfsync.protocol.uploads import UploadCreate
from shelfsync.server.app import create_app
from shelfsync.server.domain.clock import utcnow
from shelfsync.server.services.auth import Principal
from shelfsync.server.settings import Settings
from shelfsync.server.storage.engine import Database
from shelfsync.server.storage.users import UserRepository
from tests.api.test_download import store_content
from tests.client.helpers import batch_downloader, single_downloader

MIB = 1024 * 1024
NARROW = 64 * 1024  # httpcore's HTTP11Connection.READ_NUM_BYTES
BIG = random.Random(7).randbytes(9 * MIB + 12_345)
NO_RETRY = RetryPolicy(attempts=2, first_delay_s=0.0)


# -- the stream and backend, against fakes ------------------------------------


class RecordingStream(httpcore.NetworkStream):
    """Answers reads from `pieces` and records what each read asked for."""

    def __init__(self, pieces: list[bytes] | None = None) -> None:
        self.pieces = list(pieces or [])
        self.asked: list[int] = []
        self.handed: list[object] = []  # what each write was given
        self.closed = False
        self.tls: RecordingStream | None = None

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self.asked.append(max_bytes)
        return self.pieces.pop(0) if self.pieces else b""

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.handed.append(buffer)

    @property
    def written(self) -> list[bytes]:
        return [bytes(buffer) for buffer in self.handed]  # type: ignore[call-overload]

    def close(self) -> None:
        self.closed = True

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        self.tls = RecordingStream([b"over tls"])
        return self.tls

    def get_extra_info(self, info: str) -> object:
        return ("fake", 1) if info == "server_addr" else None


class RecordingBackend(httpcore.NetworkBackend):
    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces
        self.streams: list[RecordingStream] = []

    def connect_tcp(self, *args: object, **kwargs: object) -> httpcore.NetworkStream:
        self.streams.append(RecordingStream(self.pieces))
        return self.streams[-1]

    def connect_unix_socket(self, *args: object, **kwargs: object) -> httpcore.NetworkStream:
        return self.connect_tcp()


def test_a_wide_stream_asks_for_at_least_a_mebibyte_and_delegates_the_rest() -> None:
    inner = RecordingStream([b"a", b"b", b"c"])
    stream = TunedStream(inner, read_at_least=WIDE_READ_BYTES)
    assert stream.read(NARROW) == b"a"
    assert stream.read(1) == b"b"
    assert stream.read(4 * MIB) == b"c"
    assert inner.asked == [WIDE_READ_BYTES, WIDE_READ_BYTES, 4 * MIB]
    stream.write(b"GET / HTTP/1.1\r\n\r\n")
    assert inner.written == [b"GET / HTTP/1.1\r\n\r\n"]
    assert stream.get_extra_info("server_addr") == ("fake", 1)
    tls = stream.start_tls(ssl.create_default_context(), "server.test")
    assert isinstance(tls, TunedStream)
    assert inner.tls is not None
    assert tls.read(NARROW) == b"over tls"
    assert inner.tls.asked == [WIDE_READ_BYTES]
    stream.close()
    assert inner.closed


def test_a_stream_hands_its_writes_on_as_views_of_the_same_buffer() -> None:
    inner = RecordingStream()
    body = bytes(range(256)) * 4096
    TunedStream(inner).write(body)
    (handed,) = inner.handed
    assert isinstance(handed, memoryview)
    assert handed.obj is body  # a view, not a copy


def test_a_stream_without_a_minimum_reads_what_httpcore_asks_for() -> None:
    inner = RecordingStream([b"a", b"b"])
    stream = TunedStream(inner)
    assert stream.read(NARROW) == b"a"
    assert stream.read(10) == b"b"
    assert inner.asked == [NARROW, 10]


def test_a_body_larger_than_the_socket_takes_at_once_arrives_whole() -> None:
    """httpcore's stream over a real socket with a timeout and a small send buffer:
    every send is partial, and the view is resumed where each one stopped."""
    body = random.Random(3).randbytes(6 * MIB + 7)
    listener = socket.create_server(("127.0.0.1", 0))
    received = bytearray()

    def drain() -> None:
        peer, _ = listener.accept()
        with peer:
            while len(received) < len(body) and (data := peer.recv(256 * 1024)):
                received.extend(data)
                time.sleep(0.001)  # a slow reader: the sender's buffer fills

    reader = threading.Thread(target=drain)
    reader.start()
    options = [(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)]
    port = listener.getsockname()[1]
    backend = TunedBackend()
    stream = backend.connect_tcp("127.0.0.1", port, timeout=10, socket_options=options)
    try:
        stream.write(body, timeout=10)
    finally:
        reader.join(30)
        stream.close()
        listener.close()
    assert bytes(received) == body


def test_httpcore_reads_a_whole_answer_through_the_wide_transport() -> None:
    body = bytes(range(256)) * 1024
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    backend = RecordingBackend([head + body[:1000], body[1000:]])
    transport = TunedTransport(
        httpx.Limits(), network_backend=TunedBackend(backend, read_at_least=WIDE_READ_BYTES)
    )
    with httpx.Client(transport=transport) as client:
        answer = client.get("http://server.test/x")
    assert answer.status_code == 200
    assert answer.content == body
    (stream,) = backend.streams
    assert stream.asked
    assert set(stream.asked) == {WIDE_READ_BYTES}
    assert stream.written[0].startswith(b"GET /x HTTP/1.1\r\n")


def test_a_broken_answer_is_mapped_to_httpx_errors_like_httpx_own_transport() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
    backend = RecordingBackend([head + b"only part"])  # then the peer closes
    transport = TunedTransport(
        httpx.Limits(), network_backend=TunedBackend(backend, read_at_least=WIDE_READ_BYTES)
    )
    with (
        httpx.Client(transport=transport) as client,
        pytest.raises(httpx.RemoteProtocolError) as caught,
    ):
        client.get("http://server.test/x")
    assert isinstance(caught.value.__cause__, httpcore.RemoteProtocolError)


def test_a_transport_given_by_the_caller_serves_large_downloads_too() -> None:
    seen: list[str] = []

    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/auth/device":
            grant = {"access_token": "t", "token_type": "Bearer", "expires_in": 900}
            return httpx.Response(200, json={**grant, "device_id": "d"})
        seen.append(request.headers.get("range", ""))
        return httpx.Response(200, content=b"x" * 10)

    api = ApiClient("http://x", device_token="tok", transport=httpx.MockTransport(route))
    with api, api.download("big.bin", size=64 * MIB) as stream:
        assert b"".join(stream.iter_bytes()) == b"x" * 10
    assert seen == [""]


# -- downloads from the real app on a loopback socket --------------------------


@dataclass
class Served:
    app: FastAPI
    base_url: str
    user_id: str
    device_token: str

    def put(self, path: str, data: bytes) -> None:
        content_hash = store_content(self.app, self.user_id, data)
        change = {"op": "upsert", "path": path, "content_hash": content_hash}
        with self.api() as api:
            (result,) = api.report_json([{**change, "size": len(data), "base_revision": None}])
        assert result.status == "applied", result

    def api(self, base_url: str | None = None) -> ApiClient:
        return ApiClient(
            base_url or self.base_url,
            device_token=self.device_token,
            retry=NO_RETRY,
            sleep=lambda _: None,
        )


@pytest.fixture
def served(tmp_path: Path, db: Database, database_url: str) -> Iterator[Served]:
    settings = Settings(data_dir=tmp_path / "server", database_url=database_url)
    app = create_app(settings, db=db)
    services = app.state.services
    with services.db.write() as tx:
        user = UserRepository(tx).add(
            user_id=str(uuid.uuid4()), username="alice", password_hash="!", now=utcnow()
        )
    _status, device_token = services.devices.register(Principal(user, None), name="laptop")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped"
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield Served(app, f"http://127.0.0.1:{port}", user.id, device_token)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture
def wide_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The length of every wide read's answer (the wide client's streams only),
    through httpcore or straight into a buffer. After the first, the reader
    pauses once, so the socket holds more than 64 KiB by the next read."""
    got: list[int] = []
    read = TunedStream.read

    def spy(self: TunedStream, max_bytes: int, timeout: float | None = None) -> bytes:
        if not self.read_at_least:  # the main client's stream
            return read(self, max_bytes, timeout)
        if len(got) == 1:
            time.sleep(0.1)
        data = read(self, max_bytes, timeout)
        got.append(len(data))
        return data

    def spy_into(self: TunedStream, buffer: memoryview, timeout: float | None) -> int:
        if len(got) == 1:
            time.sleep(0.1)
        count = read_into(self, buffer, timeout)
        got.append(count)
        return count

    read_into = TunedStream.read_into
    monkeypatch.setattr(TunedStream, "read", spy)
    monkeypatch.setattr(TunedStream, "read_into", spy_into)
    return got


def _job(api: ApiClient, path: str) -> DownloadJob:
    (change,) = [c for c in api.changes(cursor=None).changes if c.path == path]
    assert change.content_hash is not None
    return DownloadJob(
        path, path, change.id, change.revision, change.content_hash, change.size, None, None, None
    )


def test_a_large_download_reads_wide_and_lands_identical_bytes(
    served: Served, wide_reads: list[int], tmp_path: Path
) -> None:
    served.put("media/big ü.bin", BIG)
    root = tmp_path / "folder"
    root.mkdir()
    with served.api() as api, State(root) as state:
        outcome = single_downloader(root, api, state).download(_job(api, "media/big ü.bin"))
    assert outcome.outcome is Outcome.DONE
    assert (root / "media/big ü.bin").read_bytes() == BIG
    assert sum(wide_reads) > len(BIG)  # the whole answer came through wide reads
    assert max(wide_reads) > NARROW
    assert len(wide_reads) < len(BIG) // NARROW


def test_a_large_download_resumes_with_range_through_the_wide_client(
    served: Served, wide_reads: list[int], tmp_path: Path
) -> None:
    served.put("big.bin", BIG)
    root = tmp_path / "folder"
    root.mkdir()
    with served.api() as api, State(root) as state:
        job = _job(api, "big.bin")
        counters = TransferCounters()
        downloader = single_downloader(root, api, state, counters)
        partial = 3 * MIB + 7
        (root / downloader.temp_name(job)).write_bytes(BIG[:partial])
        assert downloader.download(job).outcome is Outcome.DONE
        etag = f'"{hash_bytes(BIG)}"'
        with api.download("big.bin", offset=partial, if_range=etag, size=len(BIG)) as stream:
            assert stream.status == 206
            assert stream.headers["content-range"] == f"bytes {partial}-{len(BIG) - 1}/{len(BIG)}"
            assert b"".join(stream.iter_bytes()) == BIG[partial:]
    assert (root / "big.bin").read_bytes() == BIG
    assert counters.resumed_download_bytes == partial
    assert sum(wide_reads) > 2 * (len(BIG) - partial)


def test_small_downloads_and_batches_keep_the_default_client(
    served: Served, wide_reads: list[int], tmp_path: Path
) -> None:
    small = b"s" * (WIDE_DOWNLOAD_MIN_BYTES - 1)
    served.put("small.bin", small)
    served.put("big.bin", BIG)
    root = tmp_path / "folder"
    root.mkdir()
    with served.api() as api, State(root) as state, ThreadPoolExecutor(2) as pool:
        with api.download("small.bin", size=len(small)) as stream:
            assert b"".join(stream.iter_bytes()) == small
        with api.download("big.bin") as stream:  # size unknown
            assert b"".join(stream.iter_bytes()) == BIG
        # the rest to fetch is small: a range near the end of a large file
        offset = len(BIG) - 1000
        with api.download("big.bin", offset=offset, size=len(BIG)) as stream:
            assert b"".join(stream.iter_bytes()) == BIG[offset:]
        single = single_downloader(root, api, state)
        batch = batch_downloader(root, api, single, pool)
        results = list(batch.download_many([_job(api, "small.bin")], single.download))
    assert [getattr(r, "outcome", r) for _, r in results] == [Outcome.DONE]
    assert (root / "small.bin").read_bytes() == small
    assert wide_reads == []


def test_a_chunk_goes_up_through_the_main_client_as_a_view_of_its_bytes(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    handed: list[object] = []
    write = TunedStream.write

    def spy(self: TunedStream, buffer: bytes, timeout: float | None = None) -> None:
        handed.append(buffer)
        write(self, buffer, timeout)

    monkeypatch.setattr(TunedStream, "write", spy)
    data = random.Random(5).randbytes(MIB + 3)
    with served.api() as api:
        session = api.create_upload(
            UploadCreate(
                path="up/one.bin", size=len(data), content_hash=hash_bytes(data), base_revision=None
            )
        )
        assert session.chunk_count == 1
        api.put_chunk(session.id, index=0, data=data, content_digest=None)
        done = api.complete_upload(session.id)
        assert done.result.status == "applied"
        with api.download("up/one.bin") as stream:
            assert b"".join(stream.iter_bytes()) == data
    # httpcore hands the body over as it is (h11 joins one piece without a
    # copy), and the stream sends views of it.
    assert any(buffer is data for buffer in handed)


def test_large_download_errors_map_as_before(
    served: Served, wide_reads: list[int], tmp_path: Path
) -> None:
    served.put("big.bin", BIG)
    with served.api() as api:
        with pytest.raises(NotFound), api.download("gone.bin", size=len(BIG)):
            pass
        # An access token the server rejects is renewed once, on the wide client too.
        api._token()
        api._access_token = "not-a-token"
        with api.download("big.bin", size=len(BIG)) as stream:
            assert hash_bytes(b"".join(stream.iter_bytes())) == hash_bytes(BIG)
    assert sum(wide_reads) > len(BIG)

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    with served.api(f"http://127.0.0.1:{port}") as api:
        api._access_expires_at = float("inf")
        api._access_token = "t"
        with (
            pytest.raises(ServerUnreachable, match="cannot reach") as caught,
            api.download("big.bin", size=len(BIG)),
        ):
            pass
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


def test_a_large_download_cut_short_is_server_unreachable(wide_reads: list[int]) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def serve_half() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BIG))
            conn.sendall(BIG[: 2 * MIB])

    thread = threading.Thread(target=serve_half, daemon=True)
    thread.start()
    api = ApiClient(f"http://127.0.0.1:{port}", device_token="tok", retry=NO_RETRY)
    api._access_expires_at = float("inf")
    api._access_token = "t"
    with api, api.download("big.bin", size=len(BIG)) as stream:
        pieces = stream.iter_bytes()
        with pytest.raises(ServerUnreachable, match="download interrupted") as caught:
            collections.deque(pieces, maxlen=0)
    thread.join(10)
    listener.close()
    assert isinstance(caught.value.__cause__, httpx.RemoteProtocolError)
    assert 0 < sum(wide_reads) <= 2 * MIB + 100


def test_with_a_proxy_in_the_environment_large_downloads_keep_the_main_client(
    served: Served, wide_reads: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    served.put("big.bin", BIG)
    # Only httpx's own transport goes through a proxy: here the proxy is named
    # (nothing listens there) but bypassed for the server, as httpx reads it.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with served.api() as api, api.download("big.bin", size=len(BIG)) as stream:
        assert hash_bytes(b"".join(stream.iter_bytes())) == hash_bytes(BIG)
    assert wide_reads == []


# -- bodies read from the socket into the caller's buffer ----------------------


def test_a_large_download_reads_its_body_straight_into_the_buffer(
    served: Served, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """httpcore gets the head alone; the body goes from the socket into the
    sink's buffer, and the next download has a connection of its own."""
    heads: list[bytes] = []
    into: list[int] = []
    read, read_into = TunedStream.read, TunedStream.read_into

    def spy(self: TunedStream, max_bytes: int, timeout: float | None = None) -> bytes:
        data = read(self, max_bytes, timeout)
        if self.exact_heads:
            heads.append(data)
        return data

    def spy_into(self: TunedStream, buffer: memoryview, timeout: float | None) -> int:
        count = read_into(self, buffer, timeout)
        into.append(count)
        return count

    monkeypatch.setattr(TunedStream, "read", spy)
    monkeypatch.setattr(TunedStream, "read_into", spy_into)
    served.put("big.bin", BIG)
    root = tmp_path / "folder"
    root.mkdir()
    with served.api() as api, State(root) as state:
        downloader = single_downloader(root, api, state)
        for _ in range(2):
            (root / "big.bin").unlink(missing_ok=True)
            job = _job(api, "big.bin")
            assert downloader.download(job).outcome is Outcome.DONE
            assert (root / "big.bin").read_bytes() == BIG
    assert sum(into) == 2 * len(BIG)
    assert len(heads) == 2
    for head in heads:  # exactly the head, nothing of the body
        assert head.startswith(b"HTTP/1.1 200 ")
        assert head.endswith(b"\r\n\r\n")
        assert head.count(b"\r\n\r\n") == 1


class Scripted:
    """A loopback server answering each connection's first request with `answer`,
    sent in the given pieces (a pause between them)."""

    def __init__(self, answer: list[bytes], pause_s: float = 0.0) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.answer, self.pause_s = answer, pause_s
        self.accepted = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            with conn:
                conn.recv(65536)
                for piece in self.answer:
                    conn.sendall(piece)
                    time.sleep(self.pause_s)
                with contextlib.suppress(OSError):
                    conn.recv(1)  # until the client closes

    def api(self) -> ApiClient:
        api = ApiClient(f"http://127.0.0.1:{self.port}", device_token="tok", retry=NO_RETRY)
        api._access_expires_at = float("inf")
        api._access_token = "t"
        return api

    def close(self) -> None:
        self.listener.close()


def _read_all(stream: DownloadStream) -> tuple[bool, bytes]:
    reader = stream.body_reader()
    if reader is None:
        return False, b"".join(stream.iter_bytes())
    buffer = memoryview(bytearray(MIB))
    got = bytearray()
    while count := reader(buffer):
        got += buffer[:count]
    return True, bytes(got)


def _head(length: int, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (length, extra)


def test_a_head_arriving_a_byte_at_a_time_is_read_exactly() -> None:
    body = BIG[:WIDE_DOWNLOAD_MIN_BYTES]
    head = _head(len(body))
    server = Scripted([bytes([b]) for b in head] + [body], pause_s=0.002)
    try:
        with server.api() as api, api.download("big.bin", size=len(body)) as stream:
            assert _read_all(stream) == (True, body)
    finally:
        server.close()


def test_a_head_and_body_in_one_send_leave_the_body_in_the_socket() -> None:
    body = BIG[: 5 * MIB]
    server = Scripted([_head(len(body)) + body])
    try:
        with server.api() as api:
            for _ in range(2):
                with api.download("big.bin", size=len(body)) as stream:
                    assert _read_all(stream) == (True, body)
        assert server.accepted == 2  # a connection whose body went around h11 is not reused
    finally:
        server.close()


@pytest.mark.parametrize(
    "answer",
    [
        # an interim answer first: the real head came with body bytes through httpcore
        [b"HTTP/1.1 100 Continue\r\n\r\n" + _head(5 * MIB) + BIG[: 5 * MIB]],
        # chunked: no Content-Length
        [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n" % (5 * MIB)
            + BIG[: 5 * MIB]
            + b"\r\n0\r\n\r\n"
        ],
    ],
    ids=["interim-answer", "chunked"],
)
def test_an_answer_not_fit_for_direct_reading_is_read_through_httpx(answer: list[bytes]) -> None:
    server = Scripted(answer)
    try:
        with server.api() as api, api.download("big.bin", size=5 * MIB) as stream:
            assert _read_all(stream) == (False, BIG[: 5 * MIB])
    finally:
        server.close()


def test_a_body_cut_short_in_the_socket_is_server_unreachable() -> None:
    body = BIG[: 5 * MIB]
    listener = socket.create_server(("127.0.0.1", 0))

    def serve_part() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(_head(len(body)) + body[: 2 * MIB])

    thread = threading.Thread(target=serve_part, daemon=True)
    thread.start()
    api = ApiClient(
        f"http://127.0.0.1:{listener.getsockname()[1]}", device_token="tok", retry=NO_RETRY
    )
    api._access_expires_at = float("inf")
    api._access_token = "t"
    try:
        with (
            api,
            api.download("big.bin", size=len(body)) as stream,
            pytest.raises(ServerUnreachable, match="3145728 bytes to come"),
        ):
            _read_all(stream)
    finally:
        thread.join(10)
        listener.close()


def test_a_silent_server_times_a_direct_read_out(monkeypatch: pytest.MonkeyPatch) -> None:
    body = BIG[: 5 * MIB]
    server = Scripted([_head(len(body)) + body[:1000], b""], pause_s=5)
    try:
        with server.api() as api:
            api._timeout = httpx.Timeout(0.3, connect=10.0)
            with api.download("big.bin", size=len(body)) as stream:
                reader = stream.body_reader()
                assert reader is not None
                buffer = memoryview(bytearray(MIB))
                assert reader(buffer) == 1000
                with pytest.raises(ServerUnreachable, match="download interrupted") as caught:
                    reader(buffer)
        assert isinstance(caught.value.__cause__, httpcore.ReadTimeout)
    finally:
        server.close()
