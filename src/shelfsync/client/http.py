"""Typed calls to the shelfsync API over httpx (protocol sections 2-10).

The only module that knows httpx (and httpcore). Transport failures become ServerUnreachable,
error answers become ApiError subclasses (by `code`), both chained. Requests are
retried on transport errors and on 429/503 (honouring `Retry-After`): every
call here is safe to repeat (reports answer `unchanged` to a retry, upload
creation returns the pending session, chunk PUTs accept the same bytes again).
One `ApiClient` is shared by the transfer threads: httpx.Client is thread-safe,
and the access token is renewed under a lock. Large single-file downloads go
through a second httpx.Client (same retries, tokens and errors) whose
connections read the socket in pieces of up to 1 MiB, and whose answers' bodies
can be read from the socket straight into the caller's buffer. Every connection writes
request bodies without copying them (`TunedTransport`).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar
from urllib.parse import quote

import httpcore
import httpx
from pydantic import BaseModel, ValidationError

from shelfsync.client.errors import (
    ApiError,
    ChunkConflict,
    ClientError,
    CursorExpired,
    HashMismatch,
    MissingChunks,
    NotFound,
    ServerUnreachable,
    Unauthorized,
    UploadGone,
)
from shelfsync.protocol.auth import (
    DeviceAuthRequest,
    DeviceTokenResponse,
    LoginRequest,
    TokenResponse,
)
from shelfsync.protocol.batch import (
    BATCH_MEDIA_TYPE,
    BatchDownloadRequest,
    BatchUploadResponse,
    BatchWanted,
)
from shelfsync.protocol.devices import Device, DeviceCreate, DeviceRegistered
from shelfsync.protocol.problems import Problem
from shelfsync.protocol.sync import (
    AckRequest,
    AckResponse,
    ChangesResponse,
    Conflict,
    ConflictList,
    LocalChange,
    ReportRequest,
    ReportResponse,
    ReportResult,
    ResolveRequest,
    ResolveResponse,
)
from shelfsync.protocol.uploads import ChunkReceipt, UploadComplete, UploadCreate, UploadSession

__all__ = [
    "WIDE_DOWNLOAD_MIN_BYTES",
    "WIDE_READ_BYTES",
    "ApiClient",
    "DownloadStream",
    "RetryPolicy",
    "SizedBody",
    "TunedBackend",
    "TunedStream",
    "TunedTransport",
    "encode_library_path",
    "problem_error",
]

M = TypeVar("M", bound=BaseModel)
SYNC = "/api/v1/sync"
# Renew the access token this long before it expires, so no request races it.
_RENEW_MARGIN_S = 60.0
# Answers worth retrying as they are: throttled or overloaded (protocol section 1).
_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_BY_CODE: dict[str, type[ApiError]] = {
    "cursor_expired": CursorExpired,
    "upload_expired": UploadGone,
    "upload_not_pending": UploadGone,
    "chunk_conflict": ChunkConflict,
    "missing_chunks": MissingChunks,
    "hash_mismatch": HashMismatch,
}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry; `attempts` counts the first try."""

    attempts: int = 5
    first_delay_s: float = 0.5
    max_delay_s: float = 15.0

    def delay_s(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None:
            with contextlib.suppress(ValueError):
                asked_s = float(retry_after)
                return min(max(asked_s, 0.0), self.max_delay_s)
        return min(self.first_delay_s * (1 << attempt), self.max_delay_s)


def encode_library_path(path: str) -> str:
    """Each segment percent-encoded (protocol section 10), slashes kept."""
    return "/".join(quote(segment, safe="") for segment in path.split("/"))


def problem_error(response: httpx.Response) -> ApiError:
    """The ApiError for an error answer (problem+json, or a bare status)."""
    try:
        problem = Problem.model_validate_json(response.content)
    except ValidationError:
        text = response.text[:200].strip() or response.reason_phrase
        problem = Problem(
            title=response.reason_phrase or "error",
            status=response.status_code,
            detail=text,
            code=f"http_{response.status_code}",
        )
    if problem.status == 401:
        return Unauthorized(problem)
    if problem.code in _BY_CODE:
        return _BY_CODE[problem.code](problem)
    if problem.status == 404:
        return NotFound(problem)
    return ApiError(problem)


# -- how the connections use their sockets ----------------------------------
#
# Writes: httpcore sends a request body with `sock.send` in a loop, and after
# each partial send keeps `buffer[n:]`, a new copy of the rest. A socket with a
# timeout takes a few MiB per send, so a 16 MiB chunk was copied six or seven
# times over, into freshly faulted memory (strace of a large upload: 490 sends
# for 64 chunks; perf: two thirds of the client's page faults in that memmove).
# Every connection here writes a memoryview of the buffer instead: slicing it
# copies nothing.
#
# Reads: httpcore reads the socket in 64 KiB pieces (HTTP11Connection.READ_NUM_BYTES),
# and every piece goes through h11 and httpx in Python: 16,384 times a GiB. Large
# single-file downloads go through a client of their own whose streams read up to
# 1 MiB a time (measured: about half the client CPU of a 1 GiB download). Only
# those: a wide read allocates its whole size, too much for a small answer.
#
# Even so h11 copies every byte three times (into its buffer, out of it, into
# bytes): 0.8 s of CPU per GiB here against 0.25 s for the socket alone. So the
# wide streams read a response's head exactly, to its blank line (peeking first),
# which leaves the body untouched in the socket; a plain-TCP download with a
# Content-Length then reads its body straight into the caller's buffer
# (`DownloadStream.body_reader`), and httpcore, finding the answer unfinished
# when it is closed, drops that connection rather than reuse it.

# What a wide stream asks the socket for, at least.
WIDE_READ_BYTES = 1024 * 1024
# Downloads with at least this much left to fetch go through the wide client.
WIDE_DOWNLOAD_MIN_BYTES = 4 * 1024 * 1024


class SizedBody(Protocol):
    """A request body sent in pieces whose whole length is known up front."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[bytes]: ...


class TunedStream(httpcore.NetworkStream):
    """A network stream that writes without copying and reads at least
    `read_at_least` bytes a time; with `exact_heads`, a response's head is read
    exactly, and the body can be read into a buffer (`read_into`)."""

    def __init__(
        self, inner: httpcore.NetworkStream, *, read_at_least: int = 0, exact_heads: bool = False
    ) -> None:
        self._inner = inner
        self.read_at_least = read_at_least
        self.exact_heads = exact_heads
        self._in_head = False
        self._head_tail = b""
        # Bytes handed to httpcore since the last head ended: any, and part of
        # the body is in h11's buffer, so it cannot be read from the socket.
        self.after_head = 0

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._in_head:
            sock = self.plain_socket()
            if sock is not None:
                return self._read_head(sock, timeout)
        data = self._inner.read(max(max_bytes, self.read_at_least), timeout)
        self.after_head += len(data)
        return data

    def _read_head(self, sock: socket.socket, timeout: float | None) -> bytes:
        with _read_errors():
            sock.settimeout(timeout)
            peeked = sock.recv(_HEAD_PEEK_BYTES, socket.MSG_PEEK)
            if not peeked:
                return b""
            probe = self._head_tail + peeked
            end = probe.find(b"\r\n\r\n")
            data = sock.recv(len(peeked) if end < 0 else end + 4 - len(self._head_tail))
        seen = self._head_tail + data
        if seen.endswith(b"\r\n\r\n"):
            self._in_head, self._head_tail, self.after_head = False, b"", 0
        else:
            self._head_tail = seen[-3:]
        return data

    def read_into(self, buffer: memoryview, timeout: float | None) -> int:
        """Read body bytes from the socket into `buffer`; 0 when the peer closed."""
        sock = self.plain_socket()
        if sock is None or self._in_head or self.after_head:
            raise RuntimeError("the body is not in the socket")
        with _read_errors():
            sock.settimeout(timeout)
            return sock.recv_into(buffer)

    def plain_socket(self) -> socket.socket | None:
        """The TCP socket under an exact-heads stream without TLS, else None."""
        if not self.exact_heads or self._inner.get_extra_info("ssl_object") is not None:
            return None
        sock = self._inner.get_extra_info("socket")
        return sock if isinstance(sock, socket.socket) else None

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        # A request goes out: what comes next is an answer's head.
        self._in_head, self._head_tail = self.exact_heads, b""
        # httpcore's stream accepts any buffer: it only slices and sends it.
        self._inner.write(memoryview(buffer), timeout)  # type: ignore[arg-type]

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return TunedStream(
            self._inner.start_tls(ssl_context, server_hostname, timeout),
            read_at_least=self.read_at_least,
            exact_heads=self.exact_heads,
        )

    def get_extra_info(self, info: str) -> object:
        return self._inner.get_extra_info(info)


# A head is peeked at in pieces of this size (a head is rarely over 1 KiB).
_HEAD_PEEK_BYTES = 16 * 1024


@contextlib.contextmanager
def _read_errors() -> Iterator[None]:
    """Socket errors as httpcore's stream raises them (httpx maps those)."""
    try:
        yield
    except TimeoutError as exc:
        raise httpcore.ReadTimeout(exc) from exc
    except OSError as exc:
        raise httpcore.ReadError(exc) from exc


class TunedBackend(httpcore.NetworkBackend):
    """httpcore's network backend (or `inner`), its streams wrapped in TunedStream."""

    def __init__(
        self,
        inner: httpcore.NetworkBackend | None = None,
        *,
        read_at_least: int = 0,
        exact_heads: bool = False,
    ) -> None:
        self._inner = inner or httpcore.SyncBackend()
        self._read_at_least = read_at_least
        self._exact_heads = exact_heads

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        return TunedStream(
            self._inner.connect_tcp(host, port, timeout, local_address, socket_options),
            read_at_least=self._read_at_least,
            exact_heads=self._exact_heads,
        )

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        return TunedStream(
            self._inner.connect_unix_socket(path, timeout, socket_options),
            read_at_least=self._read_at_least,
            exact_heads=self._exact_heads,
        )

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class TunedTransport(httpx.HTTPTransport):
    """httpx's own transport (its request and response mapping, its errors, HTTP/1.1,
    certificates as httpx verifies them), its connections made by TunedBackend.

    HTTPTransport takes no network backend, so the pool it made is given ours;
    tests/client/test_http_streams.py fails if httpx or httpcore rename what
    this sets (the writes would copy and the reads narrow again)."""

    def __init__(
        self, limits: httpx.Limits, network_backend: httpcore.NetworkBackend | None = None
    ) -> None:
        super().__init__(limits=limits)
        self._pool._network_backend = network_backend or TunedBackend()


def _proxied_by_environment() -> bool:
    """Does the environment name a proxy (as httpx.Client reads it with trust_env)?"""
    return not {"http", "https", "all"}.isdisjoint(urllib.request.getproxies())


class DownloadStream:
    """An open download answer: status, headers and the body in pieces."""

    def __init__(self, response: httpx.Response, read_timeout: float | None = None) -> None:
        self._response = response
        self.status = response.status_code
        self.headers = response.headers
        self._read_timeout = read_timeout

    def body_reader(self) -> Callable[[memoryview], int] | None:
        """A function reading the body's next bytes straight from the socket into a
        buffer (0 at its end), when this answer allows it: a wide client's plain
        TCP connection whose head was read exactly, a Content-Length, no transfer
        or content coding. Else None: read `iter_bytes`. Once used, the connection
        is not reused (httpcore finds the answer unfinished)."""
        stream = self._response.extensions.get("network_stream")
        headers = self.headers
        length = headers.get("content-length", "")
        if (
            not isinstance(stream, TunedStream)
            or stream.plain_socket() is None
            or stream.after_head
            or not length.isdigit()
            or "transfer-encoding" in headers
            or headers.get("content-encoding", "identity") != "identity"
        ):
            return None
        left = int(length)
        timeout = self._read_timeout

        def read_into(buffer: memoryview) -> int:
            nonlocal left
            if not left:
                return 0
            try:
                got = stream.read_into(buffer[:left], timeout)
            except (httpcore.ReadTimeout, httpcore.ReadError) as exc:
                raise ServerUnreachable(f"download interrupted: {exc}") from exc
            if not got:
                raise ServerUnreachable(
                    f"download interrupted: the server closed with {left} bytes to come"
                )
            left -= got
            return got

        return read_into

    def iter_bytes(self, piece_bytes: int | None = None) -> Iterator[bytes]:
        """The body; by default in the pieces the socket gives (about 64 KiB, up to
        1 MiB through the wide client of large downloads), since regrouping them
        into larger pieces costs a copy of every byte (measured: about 40 % of a
        large download's client CPU)."""
        try:
            yield from self._response.iter_bytes(piece_bytes)
        except httpx.HTTPError as exc:
            raise ServerUnreachable(f"download interrupted: {exc}") from exc


class ApiClient:
    """The API as typed methods. Use as a context manager (it owns a connection pool)."""

    def __init__(
        self,
        base_url: str,
        *,
        device_token: str | None = None,
        timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        pool_size: int = 16,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._device_token = device_token
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._lock = threading.Lock()
        self._access_token: str | None = None
        self._access_expires_at = 0.0
        self.device_id: str | None = None
        self._limits = httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size)
        self._timeout = httpx.Timeout(timeout_s, connect=10.0)
        self._given_transport = transport is not None
        # httpx's own transport when the environment names a proxy: only it
        # goes through one.
        if transport is None and not _proxied_by_environment():
            transport = TunedTransport(self._limits)
        self._http = self._client(transport)
        self._wide: httpx.Client | None = None
        self._wide_lock = threading.Lock()

    def _client(self, transport: httpx.BaseTransport | None) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            timeout=self._timeout,
            transport=transport,
            limits=self._limits,
            headers={"User-Agent": "shelfsync-client"},
        )

    def _wide_client(self) -> httpx.Client:
        """The client of large downloads: a pool of its own that reads wide
        (TunedBackend with WIDE_READ_BYTES), made on first use (a TLS context costs
        ~20 ms of CPU). A transport given by the caller (tests) serves them too,
        and so does the main client when the environment names a proxy (only
        httpx's own transport goes through it)."""
        with self._wide_lock:
            if self._wide is None:
                shared = self._given_transport or _proxied_by_environment()
                self._wide = (
                    self._http
                    if shared
                    else self._client(
                        TunedTransport(
                            self._limits,
                            TunedBackend(read_at_least=WIDE_READ_BYTES, exact_heads=True),
                        )
                    )
                )
            return self._wide

    def close(self) -> None:
        try:
            self._http.close()
        finally:
            with self._wide_lock:
                if self._wide is not None and self._wide is not self._http:
                    self._wide.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------

    def _send(
        self, request: httpx.Request, *, stream: bool = False, via: httpx.Client | None = None
    ) -> httpx.Response:
        """Send (through `via`, by default the main client) with retries; error
        answers are raised as ApiError."""
        http = via or self._http
        attempt = 0
        while True:
            try:
                response = http.send(request, stream=stream)
            except httpx.TransportError as exc:
                if attempt + 1 >= self._retry.attempts:
                    raise ServerUnreachable(
                        f"cannot reach {self.base_url}: {exc or type(exc).__name__}"
                    ) from exc
                self._sleep(self._retry.delay_s(attempt, None))
                attempt += 1
                continue
            if response.status_code in _RETRY_STATUSES and attempt + 1 < self._retry.attempts:
                retry_after = response.headers.get("retry-after")
                response.close()
                self._sleep(self._retry.delay_s(attempt, retry_after))
                attempt += 1
                continue
            if response.status_code >= 400:
                if stream:
                    response.read()
                    response.close()
                raise problem_error(response)
            return response

    def _token(self, *, renew: bool = False) -> str:
        with self._lock:
            if self._device_token is None:
                raise ClientError("this call needs a device token")
            if renew or time.monotonic() >= self._access_expires_at - _RENEW_MARGIN_S:
                body = DeviceAuthRequest(device_token=self._device_token)
                request = self._http.build_request(
                    "POST", "/api/v1/auth/device", json=body.model_dump(mode="json")
                )
                grant = _parse(DeviceTokenResponse, self._send(request))
                self._access_token = grant.access_token
                self._access_expires_at = time.monotonic() + grant.expires_in
                self.device_id = grant.device_id
            assert self._access_token is not None
            return self._access_token

    def _authed(
        self,
        method: str,
        url: str,
        *,
        json: object | None = None,
        params: dict[str, str | int | float] | None = None,
        content: bytes | SizedBody | None = None,
        headers: dict[str, str] | None = None,
        timeout_s: float | None = None,
        stream: bool = False,
        via: httpx.Client | None = None,
    ) -> httpx.Response:
        http = via or self._http
        renewed = False
        while True:
            token = self._token(renew=renewed)
            request = http.build_request(
                method,
                url,
                json=json,
                params=params,
                content=content,
                headers={**(headers or {}), "Authorization": f"Bearer {token}"},
                timeout=timeout_s if timeout_s is not None else httpx.USE_CLIENT_DEFAULT,
            )
            try:
                return self._send(request, stream=stream, via=http)
            except Unauthorized:
                # An access token can die early (server restart with a new key,
                # rotation): mint one more from the device token, once.
                if renewed:
                    raise
                renewed = True

    def _model(self, model: type[M], method: str, url: str, **kwargs: object) -> M:
        return _parse(model, self._authed(method, url, **kwargs))  # type: ignore[arg-type]

    # -- accounts and devices ---------------------------------------------

    def login(self, *, username: str, password: str) -> TokenResponse:
        body = LoginRequest(username=username, password=password)
        request = self._http.build_request(
            "POST", "/api/v1/auth/login", json=body.model_dump(mode="json")
        )
        return _parse(TokenResponse, self._send(request))

    def register_device(self, *, access_token: str, device: DeviceCreate) -> DeviceRegistered:
        request = self._http.build_request(
            "POST",
            f"{SYNC}/devices",
            json=device.model_dump(mode="json", exclude_none=True),
            headers={"Authorization": f"Bearer {access_token}"},
        )
        return _parse(DeviceRegistered, self._send(request))

    def get_device(self, device_id: str) -> Device:
        return self._model(Device, "GET", f"{SYNC}/devices/{quote(device_id, safe='')}")

    def delete_device(self, device_id: str) -> None:
        self._authed("DELETE", f"{SYNC}/devices/{quote(device_id, safe='')}").close()

    # -- feed, report, conflicts ------------------------------------------

    def changes(
        self, *, cursor: str | None, limit: int = 1000, wait_s: float = 0
    ) -> ChangesResponse:
        params: dict[str, str | int | float] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        if wait_s:
            params["wait"] = wait_s
        # The server holds a long poll up to `wait`: give it that plus slack.
        return self._model(
            ChangesResponse, "GET", f"{SYNC}/changes", params=params, timeout_s=wait_s + 30.0
        )

    def ack(self, cursor: str) -> AckResponse:
        body = AckRequest(cursor=cursor).model_dump(mode="json")
        return self._model(AckResponse, "POST", f"{SYNC}/ack", json=body)

    def report(self, changes: list[LocalChange]) -> list[ReportResult]:
        body = ReportRequest(changes=changes).model_dump(mode="json")
        return self.report_json(body["changes"])

    def report_json(self, changes: list[dict[str, object]]) -> list[ReportResult]:
        """`report` with each change already as its JSON object (the push's hot
        path: a model per change cost more than the request; the server validates)."""
        body = {"changes": changes}
        return self._model(ReportResponse, "POST", f"{SYNC}/report", json=body).results

    def conflicts(self) -> list[Conflict]:
        return self._model(ConflictList, "GET", f"{SYNC}/conflicts").conflicts

    def resolve(self, conflict_id: str, *, resolution: str) -> ResolveResponse:
        body = ResolveRequest.model_validate({"resolution": resolution}).model_dump(
            mode="json", exclude_none=True
        )
        url = f"{SYNC}/conflicts/{quote(conflict_id, safe='')}/resolve"
        return self._model(ResolveResponse, "POST", url, json=body)

    # -- uploads ------------------------------------------------------------

    def create_upload(self, body: UploadCreate) -> UploadSession:
        data = body.model_dump(mode="json", exclude_none=True)
        data["base_revision"] = body.base_revision  # null is meaningful here
        return self._model(UploadSession, "POST", f"{SYNC}/upload", json=data)

    def get_upload(self, session_id: str) -> UploadSession:
        return self._model(UploadSession, "GET", f"{SYNC}/upload/{quote(session_id, safe='')}")

    def put_chunk(
        self, session_id: str, *, index: int, data: bytes | SizedBody, content_digest: str | None
    ) -> ChunkReceipt:
        """PUT one chunk; without `content_digest` when the server checks its blocks
        against the session's `block_hashes` instead. `data` is the bytes, or an
        iterable of them (iterable again for a retry) that knows its length."""
        url = f"{SYNC}/upload/{quote(session_id, safe='')}/chunks/{index}"
        headers = {"Content-Type": "application/octet-stream"}
        if not isinstance(data, bytes):
            # A known length, not chunked transfer coding.
            headers["Content-Length"] = str(len(data))
        if content_digest is not None:
            headers["Content-Digest"] = content_digest
        return self._model(ChunkReceipt, "PUT", url, content=data, headers=headers)

    def complete_upload(self, session_id: str) -> UploadComplete:
        url = f"{SYNC}/upload/{quote(session_id, safe='')}/complete"
        return self._model(UploadComplete, "POST", url)

    def cancel_upload(self, session_id: str) -> None:
        self._authed("DELETE", f"{SYNC}/upload/{quote(session_id, safe='')}").close()

    def upload_batch(self, body: bytes) -> list[ReportResult]:
        """POST a framed batch of small files (protocol section 11.4); one result each."""
        headers = {"Content-Type": BATCH_MEDIA_TYPE}
        return self._model(
            BatchUploadResponse, "POST", f"{SYNC}/upload/batch", content=body, headers=headers
        ).results

    # -- downloads ----------------------------------------------------------

    @contextlib.contextmanager
    def download_batch(self, files: list[BatchWanted]) -> Iterator[DownloadStream]:
        """POST /download/batch: the framed entries as a stream (protocol section 11.4)."""
        body = BatchDownloadRequest(files=files).model_dump(mode="json", exclude_none=True)
        response = self._authed("POST", f"{SYNC}/download/batch", json=body, stream=True)
        try:
            yield DownloadStream(response)
        finally:
            response.close()

    @contextlib.contextmanager
    def download(
        self, path: str, *, offset: int = 0, if_range: str | None = None, size: int | None = None
    ) -> Iterator[DownloadStream]:
        """GET the current content of `path`, from `offset` (Range) when > 0.

        With `if_range` (an ETag) the server answers 206 only while the content
        is still that one, else 200 with the whole body (RFC 9110 section 13.1.5).
        `size`, the whole content's size when known: with at least
        `WIDE_DOWNLOAD_MIN_BYTES` left from `offset`, the body comes through the
        client that reads the socket in pieces of up to 1 MiB.
        """
        headers: dict[str, str] = {}
        if offset > 0:
            headers["Range"] = f"bytes={offset}-"
            if if_range is not None:
                headers["If-Range"] = if_range
        wide = size is not None and size - offset >= WIDE_DOWNLOAD_MIN_BYTES
        response = self._authed(
            "GET",
            f"{SYNC}/download/{encode_library_path(path)}",
            headers=headers,
            stream=True,
            via=self._wide_client() if wide else self._http,
        )
        try:
            yield DownloadStream(response, self._timeout.read)
        finally:
            response.close()


def _parse(model: type[M], response: httpx.Response) -> M:
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        raise ClientError(
            f"unexpected answer from the server ({response.status_code}): {exc.error_count()} "
            "field error(s); is this a shelfsync server of the same version?"
        ) from exc
