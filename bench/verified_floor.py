"""The floor of a verified, durable upload on this machine: what the least a
receiver must do for shelfsync's chunk PUT semantics costs, with no HTTP, no
database and no event loop.

Goal 3 compares shelfsync's upload with nginx's WebDAV PUT, which neither hashes
the bytes nor syncs them before it answers. A chunk PUT's 200 means the bytes
were checked against their SHA-256 and are on the disk. This script moves the
payload the cheapest way Python can while keeping exactly those two promises:

- senders: `STREAMS` loopback TCP connections, each `sendfile` of its share of
  the payload (no user-space copy on the sending side at all);
- receivers: one thread per connection reading with `recv_into` into a
  page-aligned 1 MiB buffer, hashing it with hashlib's SHA-256 and writing it
  from there with `O_DIRECT`, into a fresh file per 16 MiB chunk, each file
  fdatasynced when its chunk is complete (as a chunk is before its 200).

It prints one JSON object: wall seconds and CPU seconds of this process (both
sides). `bench/transfer.py` runs it beside nginx's PUT and shelfsync's upload: if
this floor is below nginx, the gap to 1.0x is the price of verifying and
syncing, not of shelfsync's own work.

    .venv/bin/python bench/verified_floor.py PAYLOAD FOLDER [--streams 4]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import mmap
import os
import socket
import struct
import threading
import time
from pathlib import Path

PIECE = 1024 * 1024
CHUNK = 16 * 1024 * 1024


def _receive(conn: socket.socket, folder: Path, stream: int, digests: list[str]) -> None:
    (length,) = struct.unpack("!Q", conn.recv(8, socket.MSG_WAITALL))
    buffer = mmap.mmap(-1, PIECE)  # page-aligned, as O_DIRECT requires
    view = memoryview(buffer)
    received = 0
    chunk = 0
    try:
        while received < length:
            path = folder / f"floor-{stream}-{chunk}.bin"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o600)
            digest = hashlib.sha256()
            try:
                written = 0
                while written < CHUNK and received < length:
                    want = min(PIECE, length - received)
                    filled = 0
                    while filled < want:
                        n = conn.recv_into(view[filled:want])
                        if not n:
                            raise ConnectionError("sender closed early")
                        filled += n
                    digest.update(view[:filled])
                    # O_DIRECT writes whole pages: a short last piece is padded
                    # and the file cut back to its length.
                    padded = -(-filled // mmap.PAGESIZE) * mmap.PAGESIZE
                    os.pwrite(fd, view[:padded], written)
                    written += filled
                    received += filled
                if written % mmap.PAGESIZE:
                    os.ftruncate(fd, written)
                os.fdatasync(fd)
            finally:
                os.close(fd)
            digests.append(digest.hexdigest())
            chunk += 1
        conn.sendall(b"k")
    finally:
        view.release()
        buffer.close()
        conn.close()


def _send(port: int, payload: Path, offset: int, length: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock, payload.open("rb") as source:
        sock.sendall(struct.pack("!Q", length))
        sock.sendfile(source, offset=offset, count=length)
        if sock.recv(1) != b"k":
            raise ConnectionError("receiver failed")


def measure(payload: Path, folder: Path, streams: int) -> dict[str, float]:
    size = payload.stat().st_size
    shares = [size // streams] * streams
    shares[-1] += size - sum(shares)
    offsets = [sum(shares[:i]) for i in range(streams)]
    digests: list[str] = []
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        start_wall = time.perf_counter()
        start_cpu = time.process_time()
        senders = [
            threading.Thread(target=_send, args=(port, payload, offsets[i], shares[i]))
            for i in range(streams)
        ]
        for sender in senders:
            sender.start()
        receivers = []
        for stream in range(streams):
            conn, _ = server.accept()
            receiver = threading.Thread(target=_receive, args=(conn, folder, stream, digests))
            receiver.start()
            receivers.append(receiver)
        for thread in senders + receivers:
            thread.join()
        wall = time.perf_counter() - start_wall
        cpu = time.process_time() - start_cpu
    written = sum(p.stat().st_size for p in folder.glob("floor-*.bin"))
    for path in folder.glob("floor-*.bin"):
        path.unlink()
    if written != size:
        raise RuntimeError(f"the floor wrote {written} of {size} bytes")
    return {"seconds": wall, "cpu_seconds": cpu, "chunks": float(len(digests))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("payload", type=Path)
    parser.add_argument("folder", type=Path, help="where the chunk files go (then removed)")
    parser.add_argument("--streams", type=int, default=4)
    args = parser.parse_args()
    print(json.dumps(measure(args.payload, args.folder, args.streams)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
