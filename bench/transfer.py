"""Upload, download and server memory of one large file, against nginx, in one run.

Goals (issue 7):
  3. upload: a 1 GiB incompressible file through the project's client code
     (client/upload.py's Uploader over client/http.py's ApiClient: what
     `shelfsync sync` runs for a large file the scan just read: session, chunk
     PUTs in parallel, complete) into a real `shelfsync serve` on loopback, at
     least 1.0x nginx's WebDAV PUT of the same file;
  4. download: the whole file at least 0.5x nginx's throughput, and 1,000
     random 1 MiB Range GETs at least 0.5x nginx's request rate (both sides
     fetched with the same client: curl, one keep-alive connection);
  7. memory: the server's RSS (summed over its processes, from /proc) stays
     under 150 MiB while it receives a 1 GiB upload and serves a 1 GiB
     download at once.

The anchors run in the same process, interleaved with the shelfsync runs:
a private nginx (worker_processes 1, sendfile, WebDAV PUT, like
../shared/bench/http_bench.sh) serving and accepting the same payload. The
upload anchor is one streamed PUT (`curl -T`); nginx also gets the same file as
8 MiB chunks, 4 PUTs at a time, from httpx (what a chunked client does), shown
for reference. nginx does not fsync; shelfsync fdatasyncs every chunk before
its 200 (and renames/fsyncs at complete), and hashes every byte. So before each
shelfsync upload, `dd` writes the payload into the server's data directory with
direct writes and one fdatasync: the disk's durable-write floor, reported
beside both; and `bench/verified_floor.py` moves it the cheapest way Python can
while hashing every byte and fdatasyncing every 16 MiB chunk (sendfile over 4
loopback connections, recv_into, SHA-256, O_DIRECT; no HTTP, no database): the
verified-write floor, what any receiver keeping a chunk PUT's promises pays.

Each upload run first writes a fresh 32-byte nonce at the start of every 4 MiB
block of the payload (so the server can neither deduplicate nor reuse
blocks), scans it outside the timing with the client's own `Scanner` (as
`shelfsync sync` does before it uploads; the upload gets the scan's content
hash and 4 MiB block digests, as the sync engine hands them over, so the
uploader checks the file's stat instead of reading it again), deletes nginx's
previous upload, and runs
`sync` so no run starts with dirty pages. Every shelfsync run is checked
(result `applied`, the ETag of the stored file is the content hash), one range
is compared byte for byte.

Both ASGI servers are measured (`--servers uvicorn,granian`), so the default
of `shelfsync serve --server` is chosen by measurement.

    .venv/bin/python bench/transfer.py --quick          # 256 MiB, 1 run, ~40 s
    .venv/bin/python bench/transfer.py --json out.json  # 1 GiB, 3 runs (median)
    .venv/bin/python bench/transfer.py --only ranges    # the Range GETs alone

With `--only ranges` the file is uploaded once, untimed, and only the Range
GETs are measured (the JSON then carries only that goal row). The Range GETs
also report each server's CPU time per request (from /proc, whole process
tree), which is steadier than the request rate on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from _common import host_info, judge, now_iso, write_json
from _procs import Nginx, Shelfsync, cpu_seconds, make_payload, tree_pids

from shelfsync.client.http import ApiClient
from shelfsync.client.progress import QuietReporter
from shelfsync.client.scan import BlockDigests, Scanner
from shelfsync.client.state import State
from shelfsync.client.transfer import TransferCounters, TransferSettings
from shelfsync.client.upload import CHUNKED_OVER_BYTES, Uploader, UploadJob
from shelfsync.content_hash import BLOCK_SIZE

MIB = 1024 * 1024
GIB = 1024 * MIB
GOAL_UPLOAD = 1.0
GOAL_DOWNLOAD = 0.5
GOAL_RANGES = 0.5
GOAL_RSS_MIB = 150
RANGE_BYTES = MIB
NGINX_CHUNK = 8 * MIB

Json = dict[str, Any]


def _own_cpu() -> float:
    usage = os.times()
    return usage.user + usage.system


def median(values: list[float]) -> float:
    return statistics.median(values)


def fresh_sync(*evict: Path) -> None:
    """No dirty pages left; then the files under `evict` leave the page cache.

    Every timed upload starts with the uploads before it (both sides') evicted,
    so each writer finds the same pool of just-freed page-cache memory. Without
    it nginx, which unlinks its previous upload, would write into reused pages
    while shelfsync, which keeps every file and writes after nginx, would write
    into never-used memory: on a VM that costs about 2.5 s of system CPU per GiB
    more, and it would be counted against one side only.
    """
    os.sync()
    for root in evict:
        for folder, _, names in os.walk(root):
            for file_name in names:
                try:
                    fd = os.open(os.path.join(folder, file_name), os.O_RDONLY)
                except OSError:
                    continue
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)


class Payload:
    """The file every upload sends; a new nonce per run keeps it new to the server.

    It is alone in its folder, which the client's scanner reads after every
    renewal: its content hash and block digests are what the sync engine
    would hand the uploader.
    """

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        self.hash = ""
        self.mtime_ns = 0
        self.blocks: BlockDigests | None = None
        self.runs = 0

    def renew(self, tag: str) -> None:
        self.runs += 1
        # Into every 4 MiB block: the server reuses blocks it already holds.
        nonce = f"{tag}-{self.runs}-{time.time_ns()}".encode()[:32].ljust(32, b".")
        fd = os.open(self.path, os.O_WRONLY)
        try:
            for offset in range(0, self.size, BLOCK_SIZE):
                os.pwrite(fd, nonce, offset)
        finally:
            os.close(fd)
        scan = Scanner(self.path.parent, keep_blocks_over=CHUNKED_OVER_BYTES).scan(
            synced={}, cache={}
        )
        scanned = scan.files[self.path.name]
        if scanned.size != self.size or self.path.name not in scan.blocks:
            raise RuntimeError(f"the scan did not read {self.path} block by block")
        self.hash, self.mtime_ns = scanned.content_hash, scanned.mtime_ns
        self.blocks = scan.blocks[self.path.name]


# -- the disk's floor --------------------------------------------------------------


def durable_write_floor(payload: Payload, folder: Path) -> float:
    """Seconds for dd to write the payload durably into `folder` (16 MiB direct
    writes, one fdatasync): what the disk itself allows an upload that must be
    on it before its answer, as shelfsync's chunks must and nginx's PUT need not."""
    target = folder / "dd-floor.bin"
    start = time.perf_counter()
    subprocess.run(
        [
            "dd",
            f"if={payload.path}",
            f"of={target}",
            "bs=16M",
            "oflag=direct",
            "conv=fdatasync",
            "status=none",
        ],
        check=True,
    )
    elapsed = time.perf_counter() - start
    target.unlink()
    return elapsed


def verified_floor(payload: Payload, folder: Path) -> Json:
    """`bench/verified_floor.py` in `folder`: the payload over 4 loopback
    connections (sendfile), hashed and written with O_DIRECT into 16 MiB chunk
    files each fdatasynced, by plain threads; what a receiver that keeps a chunk
    PUT's promises (checked, on the disk) costs at least, without HTTP or a
    database. Its own process: its CPU is not the benchmark's."""
    script = Path(__file__).with_name("verified_floor.py")
    done = subprocess.run(
        [sys.executable, str(script), str(payload.path), str(folder)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: Json = json.loads(done.stdout)
    return result


# -- nginx anchors -----------------------------------------------------------------


def nginx_put_single(
    nginx: Nginx, payload: Payload, cpu: list[float], evict: tuple[Path, ...] = ()
) -> float:
    target = nginx.dav / "single.bin"
    target.unlink(missing_ok=True)
    fresh_sync(*evict)
    assert nginx.process is not None
    pids = tree_pids(nginx.process.pid)
    cpu_before = cpu_seconds(pids)
    start = time.perf_counter()
    subprocess.run(
        [
            "curl",
            "-sS",
            "--fail",
            "-o",
            "/dev/null",
            "-T",
            str(payload.path),
            f"{nginx.url}/dav/single.bin",
        ],
        check=True,
    )
    elapsed = time.perf_counter() - start
    cpu.append(cpu_seconds(pids) - cpu_before)
    if target.stat().st_size != payload.size:
        raise RuntimeError("nginx stored a different size")
    return elapsed


def nginx_put_chunked(
    nginx: Nginx, payload: Payload, http: httpx.Client, evict: tuple[Path, ...] = ()
) -> float:
    chunks = nginx.dav / "chunks"
    shutil.rmtree(chunks, ignore_errors=True)
    chunks.mkdir()
    fresh_sync(*evict)
    count = -(-payload.size // NGINX_CHUNK)
    fd = os.open(payload.path, os.O_RDONLY)

    def put(index: int) -> None:
        data = os.pread(fd, NGINX_CHUNK, index * NGINX_CHUNK)
        response = http.put(f"{nginx.url}/dav/chunks/c{index:05d}", content=data)
        if response.status_code not in (201, 204):
            raise RuntimeError(f"nginx chunk PUT: {response.status_code}")

    try:
        start = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(put, range(count)))
        return time.perf_counter() - start
    finally:
        os.close(fd)


# -- downloads (same client, curl, for both sides) ---------------------------------


def curl_get(url: str, headers: list[str]) -> float:
    cmd = ["curl", "-sS", "--fail", "-o", "/dev/null", url]
    for header in headers:
        cmd += ["-H", header]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - start


def range_config(path: Path, url: str, offsets: list[int], headers: list[str]) -> Path:
    entries = []
    for offset in offsets:
        lines = [
            "silent",
            "show-error",
            "fail",
            f'url = "{url}"',
            f'range = "{offset}-{offset + RANGE_BYTES - 1}"',
            'output = "/dev/null"',
        ]
        lines += [f'header = "{h}"' for h in headers]
        entries.append("\n".join(lines))
    path.write_text("\nnext\n".join(entries) + "\n")
    return path


def curl_ranges(config: Path, pids: list[int], cpu: list[float]) -> float:
    """One curl fetching every range of `config`; the CPU time `pids` spent goes to `cpu`."""
    cpu_before = cpu_seconds(pids)
    start = time.perf_counter()
    subprocess.run(["curl", "-sS", "--fail", "-K", str(config)], check=True)
    elapsed = time.perf_counter() - start
    cpu.append(cpu_seconds(pids) - cpu_before)
    return elapsed


# -- shelfsync ---------------------------------------------------------------------


class ClientSide:
    """The sync client's upload machinery, as SyncEngine builds it."""

    def __init__(self, server: Shelfsync, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.settings = TransferSettings()
        self.state = State(folder)
        self.api = ApiClient(server.url, device_token=server.device_tokens[0])
        self.pool = ThreadPoolExecutor(self.settings.parallel_chunks, "bench-chunk")
        self.uploader = Uploader(
            api=self.api,
            state=self.state,
            settings=self.settings,
            counters=TransferCounters(),
            reporter=QuietReporter(),
            chunk_pool=self.pool,
        )
        self.api.conflicts()  # the access token, outside any timing

    def upload(self, payload: Payload, library_path: str) -> float:
        job = UploadJob(
            path=library_path,
            file=payload.path,
            content_hash=payload.hash,
            size=payload.size,
            mtime_ns=payload.mtime_ns,
            base_revision=None,
            scanned=payload.blocks,
        )
        start = time.perf_counter()
        result = self.uploader.upload(job)
        elapsed = time.perf_counter() - start
        if result is None or result.status != "applied":
            raise RuntimeError(f"upload of {library_path} did not land: {result}")
        return elapsed

    def close(self) -> None:
        self.pool.shutdown()
        self.api.close()
        self.state.close()


def check_stored(server: Shelfsync, library_path: str, payload: Payload, offset: int) -> None:
    headers = {"Authorization": f"Bearer {server.access_tokens[0]}"}
    url = f"{server.url}/api/v1/sync/download/{library_path}"
    with httpx.Client(timeout=60) as http:
        head = http.head(url, headers=headers)
        if head.headers.get("etag") != f'"{payload.hash}"':
            raise RuntimeError(f"stored ETag {head.headers.get('etag')} is not {payload.hash}")
        part = http.get(
            url, headers={**headers, "Range": f"bytes={offset}-{offset + RANGE_BYTES - 1}"}
        )
    with payload.path.open("rb") as fh:
        fh.seek(offset)
        if part.status_code != 206 or part.content != fh.read(RANGE_BYTES):
            raise RuntimeError("a range of the stored file differs from the payload")


def memory_under_load(
    server: Shelfsync, client: ClientSide, payload: Payload, download_path: str
) -> Json:
    """Peak RSS of the server's processes while one upload and one download run."""
    idle = server.rss()
    payload.renew("mem")
    fresh_sync()
    peak = idle
    samples = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak, samples
        while not stop.is_set():
            peak = max(peak, server.rss())
            samples += 1
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    url = f"{server.url}/api/v1/sync/download/{download_path}"
    header = f"Authorization: Bearer {server.access_tokens[0]}"
    try:
        with ThreadPoolExecutor(2) as pool:
            up = pool.submit(client.upload, payload, "mem-upload.bin")
            down = pool.submit(curl_get, url, [header])
            up_s, down_s = up.result(), down.result()
    finally:
        stop.set()
        sampler.join()
    return {
        "idle_rss_mib": idle / MIB,
        "peak_rss_mib": peak / MIB,
        "samples": samples,
        "processes": len(server.pids()),
        "upload_s": up_s,
        "download_s": down_s,
    }


def interleave(
    runs: int, first: Callable[[], float], second: Callable[[], float]
) -> tuple[list[float], list[float]]:
    a, b = [], []
    for _ in range(runs):
        a.append(first())
        b.append(second())
    return a, b


def measure_server(
    name: str, args: argparse.Namespace, tmp: Path, nginx: Nginx, payload: Payload
) -> Json:
    server = Shelfsync(tmp / f"srv-{name}", name).start()
    client = ClientSide(server, tmp / f"client-{name}")
    nginx_http = httpx.Client(timeout=120, limits=httpx.Limits(max_connections=4))
    try:
        out: Json = {"server": name, "idle_rss_mib": server.rss() / MIB}
        if args.only == "ranges":
            payload.renew(f"{name}-ranges")
            stored = "up/ranges.bin"
            client.upload(payload, stored)
            check_stored(
                server,
                stored,
                payload,
                offset=random.Random(0).randrange(payload.size - RANGE_BYTES),
            )
            out["ranges"] = measure_ranges(args, tmp, nginx, server, payload, stored)
            return out
        # Upload: nginx single PUT, nginx chunked, shelfsync client, interleaved per run.
        up_nginx, up_nginx_chunked, up_ours, up_floor = [], [], [], []
        up_verified: list[float] = []
        cpu_verified: list[float] = []
        cpu_nginx: list[float] = []
        cpu_server: list[float] = []
        cpu_client: list[float] = []
        uploaded = (nginx.dav, server.data_dir / "content")  # the page-cache state: fresh_sync
        for run in range(args.runs):
            payload.renew(f"{name}-{run}")
            up_nginx.append(nginx_put_single(nginx, payload, cpu_nginx, uploaded))
            up_nginx_chunked.append(nginx_put_chunked(nginx, payload, nginx_http, uploaded))
            fresh_sync(*uploaded)
            up_floor.append(durable_write_floor(payload, server.data_dir))
            fresh_sync(*uploaded)
            floor = verified_floor(payload, server.data_dir)
            up_verified.append(floor["seconds"])
            cpu_verified.append(floor["cpu_seconds"])
            fresh_sync(*uploaded)
            path = f"up/run-{run}.bin"
            server_before, client_before = cpu_seconds(server.pids()), _own_cpu()
            up_ours.append(client.upload(payload, path))
            cpu_server.append(cpu_seconds(server.pids()) - server_before)
            cpu_client.append(_own_cpu() - client_before)
            check_stored(
                server,
                path,
                payload,
                offset=random.Random(run).randrange(payload.size - RANGE_BYTES),
            )
        stored = f"up/run-{args.runs - 1}.bin"
        # nginx serves the same bytes as the last upload.
        served = nginx.files / "payload.bin"
        served.unlink(missing_ok=True)
        os.link(payload.path, served)
        size = payload.size
        out["upload"] = {
            "nginx_put_s": up_nginx,
            "nginx_chunked_put_s": up_nginx_chunked,
            "shelfsync_s": up_ours,
            "durable_floor_s": up_floor,
            "nginx_MBps": size / median(up_nginx) / 1e6,
            "durable_floor_MBps": size / median(up_floor) / 1e6,
            "verified_floor_s": up_verified,
            "verified_floor_MBps": size / median(up_verified) / 1e6,
            "verified_floor_cpu_s_per_gib": median(cpu_verified) * GIB / size,
            "nginx_chunked_MBps": size / median(up_nginx_chunked) / 1e6,
            "shelfsync_MBps": size / median(up_ours) / 1e6,
            # CPU seconds per GiB: what the work costs, whatever else runs.
            "nginx_cpu_s_per_gib": median(cpu_nginx) * GIB / size,
            "server_cpu_s_per_gib": median(cpu_server) * GIB / size,
            "client_cpu_s_per_gib": median(cpu_client) * GIB / size,
        }
        if args.only == "upload":
            return out
        # Full download: curl for both.
        auth = [f"Authorization: Bearer {server.access_tokens[0]}"]
        ours_url = f"{server.url}/api/v1/sync/download/{stored}"
        nginx_url = f"{nginx.url}/files/payload.bin"
        curl_get(nginx_url, [])  # page cache and connections warm for both
        curl_get(ours_url, auth)
        dl_nginx, dl_ours = interleave(
            args.runs, lambda: curl_get(nginx_url, []), lambda: curl_get(ours_url, auth)
        )
        out["download"] = {
            "nginx_s": dl_nginx,
            "shelfsync_s": dl_ours,
            "nginx_MBps": size / median(dl_nginx) / 1e6,
            "shelfsync_MBps": size / median(dl_ours) / 1e6,
        }
        out["ranges"] = measure_ranges(args, tmp, nginx, server, payload, stored, served=True)
        out["memory"] = memory_under_load(server, client, payload, stored)
        return out
    finally:
        nginx_http.close()
        client.close()
        server.stop()
        shutil.rmtree(server.data_dir / "content", ignore_errors=True)


def measure_ranges(
    args: argparse.Namespace,
    tmp: Path,
    nginx: Nginx,
    server: Shelfsync,
    payload: Payload,
    stored: str,
    *,
    served: bool = False,
) -> Json:
    """Random 1 MiB ranges: the same offsets for both, one curl, one connection."""
    name = server.server
    nginx_url = f"{nginx.url}/files/payload.bin"
    if not served:  # nginx serves the same bytes as the stored file
        (nginx.files / "payload.bin").unlink(missing_ok=True)
        os.link(payload.path, nginx.files / "payload.bin")
    ours_url = f"{server.url}/api/v1/sync/download/{stored}"
    auth = [f"Authorization: Bearer {server.access_tokens[0]}"]
    rng = random.Random(7)
    offsets = [rng.randrange(payload.size - RANGE_BYTES) for _ in range(args.ranges)]
    cfg_nginx = range_config(tmp / "ranges-nginx.cfg", nginx_url, offsets, [])
    cfg_ours = range_config(tmp / f"ranges-{name}.cfg", ours_url, offsets, auth)
    assert nginx.process is not None
    nginx_pids, server_pids = tree_pids(nginx.process.pid), server.pids()
    cpu_nginx: list[float] = []
    cpu_ours: list[float] = []
    rg_nginx, rg_ours = interleave(
        args.runs,
        lambda: curl_ranges(cfg_nginx, nginx_pids, cpu_nginx),
        lambda: curl_ranges(cfg_ours, server_pids, cpu_ours),
    )
    return {
        "count": args.ranges,
        "nginx_s": rg_nginx,
        "shelfsync_s": rg_ours,
        "nginx_per_s": args.ranges / median(rg_nginx),
        "shelfsync_per_s": args.ranges / median(rg_ours),
        # CPU milliseconds per request of each server's processes.
        "nginx_cpu_ms": median(cpu_nginx) * 1000 / args.ranges,
        "server_cpu_ms": median(cpu_ours) * 1000 / args.ranges,
    }


def ratios(result: Json) -> Json:
    if "upload" not in result:  # --only ranges
        return {"ranges": result["ranges"]["shelfsync_per_s"] / result["ranges"]["nginx_per_s"]}
    if "download" not in result:  # --only upload
        return {
            "upload": result["upload"]["shelfsync_MBps"] / result["upload"]["nginx_MBps"],
            "upload_vs_chunked": result["upload"]["shelfsync_MBps"]
            / result["upload"]["nginx_chunked_MBps"],
        }
    return {
        "upload": result["upload"]["shelfsync_MBps"] / result["upload"]["nginx_MBps"],
        "upload_vs_chunked": result["upload"]["shelfsync_MBps"]
        / result["upload"]["nginx_chunked_MBps"],
        "download": result["download"]["shelfsync_MBps"] / result["download"]["nginx_MBps"],
        "ranges": result["ranges"]["shelfsync_per_s"] / result["ranges"]["nginx_per_s"],
        "peak_rss_mib": result["memory"]["peak_rss_mib"],
    }


def print_ranges(rg: Json) -> None:
    print(f"  ranges   nginx (curl, {rg['count']} x 1 MiB)   {rg['nginx_per_s']:8.0f} req/s")
    print(f"  ranges   shelfsync (curl)            {rg['shelfsync_per_s']:8.0f} req/s")
    print(
        f"  ranges   server CPU per request: nginx {rg['nginx_cpu_ms']:.3f} ms; "
        f"shelfsync {rg['server_cpu_ms']:.3f} ms"
    )


def print_result(result: Json, size: int) -> None:
    name = result["server"]
    print(f"\n== shelfsync serve --server {name} ({size / MIB:.0f} MiB payload)")
    print(f"  idle server RSS                      {result['idle_rss_mib']:8.1f} MiB")
    if "upload" not in result:  # --only ranges
        print_ranges(result["ranges"])
        return
    up = result["upload"]
    print(f"  upload   nginx WebDAV PUT (curl -T)  {up['nginx_MBps']:8.0f} MB/s")
    print(f"  upload   nginx 8 MiB x4 PUTs (httpx) {up['nginx_chunked_MBps']:8.0f} MB/s")
    print(f"  upload   disk floor (dd direct, sync) {up['durable_floor_MBps']:7.0f} MB/s")
    print(
        f"  upload   verified floor (hash+direct) {up['verified_floor_MBps']:7.0f} MB/s "
        f"({up['verified_floor_cpu_s_per_gib']:.2f} CPU-s/GiB, sender included)"
    )
    print(f"  upload   shelfsync client            {up['shelfsync_MBps']:8.0f} MB/s")
    print(
        f"  upload   CPU s/GiB: nginx {up['nginx_cpu_s_per_gib']:.2f}; shelfsync server "
        f"{up['server_cpu_s_per_gib']:.2f} + client {up['client_cpu_s_per_gib']:.2f}"
    )
    if "download" not in result:  # --only upload
        return
    dl, rg, mem = result["download"], result["ranges"], result["memory"]
    print(f"  download nginx (curl)                {dl['nginx_MBps']:8.0f} MB/s")
    print(f"  download shelfsync (curl)            {dl['shelfsync_MBps']:8.0f} MB/s")
    print_ranges(rg)
    print(
        f"  memory   peak RSS {mem['peak_rss_mib']:.1f} MiB over {mem['processes']} process(es) "
        f"(idle {mem['idle_rss_mib']:.1f}) during upload {mem['upload_s']:.2f} s + "
        f"download {mem['download_s']:.2f} s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="256 MiB, 1 run, 200 ranges")
    parser.add_argument(
        "--servers", help="ASGI servers to measure (default uvicorn,granian; quick: uvicorn)"
    )
    parser.add_argument("--size-mib", type=int, help="payload size (default 1024, quick 256)")
    parser.add_argument("--runs", type=int, help="timed runs per case (default 3, quick 1)")
    parser.add_argument("--ranges", type=int, help="Range GETs (default 1000, quick 200)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--only",
        choices=["ranges", "upload"],
        help="measure only this case (ranges: the file is uploaded untimed)",
    )
    args = parser.parse_args()
    args.size_mib = args.size_mib or (256 if args.quick else 1024)
    args.runs = args.runs or (1 if args.quick else 3)
    args.ranges = args.ranges or (200 if args.quick else 1000)
    args.servers = args.servers or ("uvicorn" if args.quick else "uvicorn,granian")
    size = args.size_mib * MIB
    servers = [s for s in args.servers.split(",") if s]
    started = now_iso()
    tmp = Path(tempfile.mkdtemp(prefix="shelfsync-bench-transfer-"))
    nginx = Nginx(tmp / "nginx")
    results: list[Json] = []
    try:
        (tmp / "payload").mkdir()
        payload = Payload(tmp / "payload" / "payload.bin", size)
        make_payload(payload.path, size)
        nginx.start()
        for name in servers:
            results.append(measure_server(name, args, tmp, nginx, payload))
    finally:
        nginx.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    for result in results:
        print_result(result, size)
    table = {r["server"]: ratios(r) for r in results}
    goals = []
    for r in results:
        name, rt = r["server"], table[r["server"]]
        rg = r.get("ranges")
        ranges_row = (
            4,
            "1 MiB ranges",
            f"nginx (curl): {rg['nginx_per_s']:.0f} req/s" if rg else "",
            f"{rg['shelfsync_per_s']:.0f} req/s" if rg else "",
            rt.get("ranges", 0.0),
            f">= {GOAL_RANGES}",
        )
        rows = [ranges_row]
        if "upload" in r:
            up = r["upload"]
            upload_row = (
                3,
                "upload",
                f"nginx WebDAV PUT (curl -T): {up['nginx_MBps']:.0f} MB/s "
                f"(durable-write floor, dd: {up['durable_floor_MBps']:.0f} MB/s; "
                f"verified-write floor: {up['verified_floor_MBps']:.0f} MB/s)",
                f"{up['shelfsync_MBps']:.0f} MB/s "
                f"({up['shelfsync_MBps'] / up['durable_floor_MBps']:.2f}x the dd floor, "
                f"{up['shelfsync_MBps'] / up['verified_floor_MBps']:.2f}x the verified floor)",
                rt["upload"],
                f">= {GOAL_UPLOAD}",
            )
            rows = [upload_row]
        if "download" in r:
            dl, mem = r["download"], r["memory"]
            rows = [
                upload_row,
                (
                    4,
                    "download",
                    f"nginx (curl): {dl['nginx_MBps']:.0f} MB/s",
                    f"{dl['shelfsync_MBps']:.0f} MB/s",
                    rt["download"],
                    f">= {GOAL_DOWNLOAD}",
                ),
                ranges_row,
                (
                    7,
                    "RSS, upload + download at once",
                    f"goal: < {GOAL_RSS_MIB} MiB",
                    f"peak {mem['peak_rss_mib']:.1f} MiB",
                    mem["peak_rss_mib"] / GOAL_RSS_MIB,
                    "<= 1.0",
                ),
            ]
        for goal, label, anchor, ours, ratio, target in rows:
            goals.append(
                {
                    "goal": goal,
                    "label": f"{label} ({name})",
                    "anchor": anchor,
                    "shelfsync": ours,
                    "ratio": round(ratio, 3),
                    "target": target,
                    "met": judge(ratio, target),
                    "comparable": not args.quick,
                    "command": f"bench/transfer.py --servers {name}"
                    + (f" --only {args.only}" if args.only else ""),
                }
            )
    if args.json is not None:
        write_json(
            args.json,
            {
                "script": "transfer",
                "schema": 1,
                "quick": args.quick,
                "command": " ".join(["bench/transfer.py", *sys.argv[1:]]),
                "started": started,
                "finished": now_iso(),
                "host": host_info(),
                "goals": goals,
                "size_bytes": size,
                "results": results,
                "ratios": table,
            },
        )
    print()
    ok = True
    for r in results:
        if "memory" not in r:  # --only ranges
            continue
        mem = r["memory"]
        print(
            f"[{r['server']}] upload vs nginx 8 MiB x4 chunked PUTs: "
            f"{table[r['server']]['upload_vs_chunked']:.2f}x; "
            f"idle RSS {mem['idle_rss_mib']:.1f} MiB"
        )
    for g in goals:
        ok = ok and bool(g["met"])
        print(
            f"{'ok  ' if g['met'] else 'MISS'} goal {g['goal']} {g['label']}: {g['shelfsync']} vs "
            f"{g['anchor']} = {g['ratio']:.2f} (target {g['target']})"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
