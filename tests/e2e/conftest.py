"""End-to-end fixtures: a real server process per test, devices as real CLI runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Device, Server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(data_dir=tmp_path / "server" / "data")
    srv.data_dir.mkdir(parents=True)
    srv.add_user("alice")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def make_device(server: Server, tmp_path: Path) -> Callable[..., Device]:
    """A logged-in device with an (empty) folder of its own."""

    def make(name: str, *login_args: str) -> Device:
        device = Device(name=name, server=server, home=tmp_path / name)
        device.login(*login_args)
        return device

    return make
