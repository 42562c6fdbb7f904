"""End-to-end fixtures: a real server process, devices as real CLI runs.

One server per test worker (starting one costs seconds: schema, secret); every
test gets a user of its own, and users never see each other's library
(protocol section 3), so tests stay independent.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Device, Server

_users = itertools.count(1)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("server")
    srv = Server(data_dir=root / "data")
    srv.data_dir.mkdir(parents=True)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def username(server: Server) -> str:
    name = f"user{next(_users)}"
    server.add_user(name)
    return name


@pytest.fixture
def make_device(server: Server, username: str, tmp_path: Path) -> Callable[..., Device]:
    """A logged-in device (of this test's user) with an empty folder of its own."""

    def make(name: str, *login_args: str) -> Device:
        device = Device(name=name, server=server, home=tmp_path / name, username=username)
        device.login(*login_args)
        return device

    return make
