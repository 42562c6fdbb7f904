"""An edited large file sends only the chunks that changed (`block_hashes`)."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from tests.e2e.harness import Device, Server

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024


def test_editing_a_large_file_uploads_only_the_changed_chunk(
    server: Server, make_device: Callable[..., Device]
) -> None:
    a, b = make_device("A"), make_device("B")
    data = bytearray(os.urandom(32 * MiB))  # four 8 MiB chunks
    path = a.write("disk.img", bytes(data))
    first = a.sync()
    assert first["chunks_sent"] == 4
    b.sync()

    data[20 * MiB : 20 * MiB + 5] = b"EDIT!"  # inside the third chunk
    path.write_bytes(bytes(data))
    second = a.sync()
    assert second["chunks_sent"] == 1
    assert second["chunks_already_there"] == 3
    assert second["uploaded_bytes"] == 8 * MiB
    b.sync()
    assert (b.folder / "disk.img").read_bytes() == bytes(data)
    assert b.tree() == a.tree() == server.library(a)
