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
    # The client asks for chunks of one 4 MiB block for files over 8 MiB.
    data = bytearray(os.urandom(32 * MiB))  # eight 4 MiB chunks
    path = a.write("disk.img", bytes(data))
    first = a.sync()
    assert first["chunks_sent"] == 8
    b.sync()

    data[20 * MiB : 20 * MiB + 5] = b"EDIT!"  # inside the sixth chunk
    path.write_bytes(bytes(data))
    second = a.sync()
    assert second["chunks_sent"] == 1
    assert second["chunks_already_there"] == 7
    assert second["uploaded_bytes"] == 4 * MiB
    b.sync()
    assert (b.folder / "disk.img").read_bytes() == bytes(data)
    assert b.tree() == a.tree() == server.library(a)
