"""`shelfsync sync --watch`: a file saved on one device appears on another within 5 s."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from tests.e2e.harness import Device, Server, wait_until

pytestmark = pytest.mark.e2e


@contextmanager
def watching(device: Device) -> Iterator[subprocess.Popen[bytes]]:
    process = device.spawn("sync", str(device.folder), "--watch")
    try:
        wait_until(
            lambda: device.state_rows("SELECT value FROM meta WHERE key = 'last_sync'"),
            timeout_s=60,
            what=f"{device.name} to finish its first pass",
        )
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_file_saved_on_one_device_appears_on_the_other_within_5_seconds(
    server: Server, make_device: Callable[..., Device]
) -> None:
    a, b = make_device("A"), make_device("B")
    with watching(a) as wa, watching(b) as wb:
        a.write("notes/today.md", "saved on A\n")
        started = time.monotonic()
        target = b.folder / "notes/today.md"
        wait_until(
            lambda: target.exists() and target.read_text() == "saved on A\n",
            timeout_s=5,
            what="the file on B",
        )
        a_to_b = time.monotonic() - started

        b.write("notes/today.md", "edited on B\n")
        started = time.monotonic()
        back = a.folder / "notes/today.md"
        wait_until(lambda: back.read_text() == "edited on B\n", timeout_s=5, what="the edit on A")
        b_to_a = time.monotonic() - started
    print(f"\nwatch: A -> B {a_to_b:.2f} s, B -> A {b_to_a:.2f} s")
    assert wa.returncode == 0, a.log()
    assert wb.returncode == 0, b.log()
    assert a.tree() == b.tree() == server.library(a)
