"""10,000 small files reach an empty second device (batched reports, parallel downloads)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.e2e.harness import Device, Server

pytestmark = pytest.mark.e2e

FILES = 10_000
# The uploading side reports in batches of 1000 and sends each distinct content
# once (the server takes repeats from its store): 200 contents keep the setup
# short. The second device still downloads 10,000 files, one request each.
CONTENTS = [f"small file body {i}\n".encode() * (1 + i % 9) for i in range(200)]


def test_ten_thousand_small_files_reach_an_empty_device(
    server: Server, make_device: Callable[..., Device]
) -> None:
    a, b = make_device("A"), make_device("B")
    for i in range(FILES):
        a.write(f"library/d{i // 100:03}/f{i % 100:03}.txt", CONTENTS[i % len(CONTENTS)])
    started = time.monotonic()
    up = a.sync()
    upload_s = time.monotonic() - started
    assert up["uploaded_files"] == len(CONTENTS)

    started = time.monotonic()
    down = b.sync()
    download_s = time.monotonic() - started
    print(f"\n10,000 files: first device {upload_s:.1f} s, empty second device {download_s:.1f} s")
    assert down["downloaded_files"] == FILES
    tree = b.tree()
    assert len(tree) == FILES
    assert tree == a.tree() == server.library(a)
    assert b.sync()["actions"] == 0
