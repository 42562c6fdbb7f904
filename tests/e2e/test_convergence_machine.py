"""Random interleavings of edits, syncs, crashes and server restarts converge, losing nothing.

A hypothesis state machine drives 2-3 devices (the real client library: an
in-process `SyncEngine.run_pass`, exactly what `shelfsync sync` runs, each
device with its own config directory and folder) against one real
`shelfsync serve` process (SQLite, loopback). Steps: create, edit, delete and
move files, rename folders, sync one device, crash one device mid-transfer, and
restart the server with SIGKILL. After every device synced until quiet:

1. convergence: every folder equals the server's live library byte for byte;
2. no loss: every content a folder held right after a successful pass is still
   on the server: a live item, or a retained revision of an item at a path
   ever seen (conflict copies are live items under `keep_both`);
3. the feed read from the start (in small pages) yields each live item once.

The crash is in-process and deterministic: the device's `ApiClient` gets an
httpx transport (its public `transport=` argument) that raises on the k-th
report, upload creation, chunk, completion or download, before sending it or
after the server answered, and refuses every request after that, so the pass
dies there like a killed process (nothing after that point reaches the
server). Its local state is closed as the `with` blocks unwind, as the OS
would close the files.
"""

from __future__ import annotations

import io
import itertools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

from shelfsync.client.config import DeviceConfig, load_config, save_config
from shelfsync.client.http import ApiClient, RetryPolicy, encode_library_path
from shelfsync.client.progress import QuietReporter
from shelfsync.client.state import State
from shelfsync.client.sync import PassSummary, SyncEngine
from shelfsync.content_hash import hash_bytes
from shelfsync.protocol.devices import DeviceCreate
from tests.e2e.harness import PASSWORD, Device, Server, folder_tree

pytestmark = pytest.mark.e2e

FILES = ("a.txt", "b.txt")
DIRS = ("d1", "d2", "d3")
PATHS = FILES + tuple(f"{d}/{f}" for d in DIRS for f in FILES)
# Tiny contents from a small alphabet: identical contents (dedupe, moves by
# content) and collisions happen often.
CONTENTS = st.text(alphabet="xy", max_size=3).map(str.encode)
DEVICE_INDEX = st.integers(min_value=0, max_value=2)
QUIET_ROUNDS = 6  # full rounds of "every device syncs" before giving up
MAX_REVISION_PROBE = 40

_users = itertools.count(1)


class Crash(Exception):
    """The device "dies" here: raised from the transport, never caught by the client."""


class CrashingTransport(httpx.HTTPTransport):
    """Kills the pass at the k-th transfer request (before sending it, or after its answer)."""

    def __init__(self, *, at: int, after: bool) -> None:
        super().__init__()
        self.at = at
        self.after = after
        self.seen = 0
        self.dead = False

    @staticmethod
    def _is_transfer(request: httpx.Request) -> bool:
        path = request.url.path
        return (
            (request.method == "POST" and path.endswith(("/sync/report", "/sync/upload")))
            or (request.method == "PUT" and "/chunks/" in path)
            or (request.method == "POST" and path.endswith("/complete"))
            or (request.method == "GET" and "/sync/download/" in path)
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.dead:
            raise Crash("the device is down")
        if self._is_transfer(request):
            if self.seen == self.at:
                self.dead = True
                if self.after:
                    response = super().handle_request(request)
                    response.read()
                    response.close()
                raise Crash(f"crashed at {request.method} {request.url.path}")
            self.seen += 1
        return super().handle_request(request)


def run_pass(
    device: Device, transport: httpx.BaseTransport | None = None
) -> tuple[PassSummary, str]:
    """One `shelfsync sync` pass, in process; its summary and its warnings."""
    config = load_config(device.config_dir)
    warnings = io.StringIO()
    root = device.folder.resolve()
    with (
        ApiClient(
            config.server_url,
            device_token=config.device_token,
            retry=RetryPolicy(attempts=4, first_delay_s=0.1, max_delay_s=1.0),
            transport=transport,
        ) as api,
        State(root) as state,
    ):
        state.lock_folder()
        state.bind(server_url=config.server_url, device_id=config.device_id)
        with SyncEngine(
            root=root, api=api, state=state, reporter=QuietReporter(warnings)
        ) as engine:
            summary = engine.run_pass()
    return summary, warnings.getvalue()


def register_device(server: Server, username: str, home: Path, name: str) -> Device:
    """A device of `username` with its own config directory and empty folder (in process)."""
    device = Device(name=name, server=server, home=home, username=username)
    device.folder.mkdir(parents=True)
    with ApiClient(server.url) as api:
        tokens = api.login(username=username, password=PASSWORD)
        registered = api.register_device(
            access_token=tokens.access_token,
            device=DeviceCreate(name=name, device_type="desktop", conflict_policy="keep_both"),
        )
    save_config(
        DeviceConfig(
            server_url=api.base_url,
            device_id=registered.device.id,
            device_token=registered.token,
            device_name=registered.device.name,
        ),
        directory=device.config_dir,
    )
    return device


def read_feed(device: Device, *, limit: int) -> list[dict[str, Any]]:
    """Every change from no cursor to the end, in pages of `limit`."""
    changes: list[dict[str, Any]] = []
    with device.api() as client:
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": limit}
            if cursor:
                params["cursor"] = cursor
            response = client.get("/api/v1/sync/changes", params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            changes.extend(page["changes"])
            cursor = page["cursor"]
            if not page["has_more"]:
                return changes


def reachable_hash(device: Device, paths: set[str], wanted: str) -> str | None:
    """Where `wanted` can still be downloaded as an older revision, if anywhere."""
    with device.api() as client:
        for path in sorted(paths):
            misses = 0
            for revision in range(1, MAX_REVISION_PROBE + 1):
                url = f"/api/v1/sync/download/{encode_library_path(path)}"
                response = client.head(url, params={"revision": revision})
                if response.status_code == 404:
                    misses += 1  # a delete revision, or past the last one
                    if misses >= 6:
                        break
                    continue
                assert response.status_code == 200, (path, revision, response.status_code)
                misses = 0
                if response.headers["etag"].strip('"') == wanted:
                    return f"{path}?revision={revision}"
    return None


class ConvergenceMachine(RuleBasedStateMachine):
    server: Server
    root: Path

    def __init__(self) -> None:
        super().__init__()
        self.devices: list[Device] = []
        self.home: Path | None = None
        # content hash -> where it was first seen at a sync point
        self.synced_contents: dict[str, str] = {}
        self.paths_seen: set[str] = set()
        self.restarts = 0
        self.log: list[str] = []

    @initialize(count=st.integers(min_value=2, max_value=3))
    def start(self, count: int) -> None:
        username = f"machine{os.getpid()}x{next(_users)}"
        self.home = self.root / username
        self.home.mkdir()
        self.server.add_user(username)
        self.devices = [
            register_device(self.server, username, self.home / name, name) for name in "ABC"[:count]
        ]

    def teardown(self) -> None:
        try:
            if self.devices:
                self.settle_and_check()
        finally:
            if self.home is not None:
                shutil.rmtree(self.home, ignore_errors=True)

    # -- helpers ------------------------------------------------------------

    def device(self, index: int) -> Device:
        return self.devices[index % len(self.devices)]

    def files(self, device: Device) -> list[str]:
        return sorted(folder_tree(device.folder))

    def record(self, device: Device) -> None:
        for path, content_hash in folder_tree(device.folder).items():
            self.synced_contents.setdefault(content_hash, f"{device.name}:{path}")
            self.paths_seen.add(path)

    def sync(self, device: Device) -> PassSummary:
        summary, warnings = run_pass(device)
        self.log.append(f"sync {device.name}: {summary.actions} actions {warnings.strip()}")
        assert summary.settled, f"{device.name}: the pass did not settle\n{warnings}"
        assert not summary.failed, f"{device.name}: {summary.failed}\n{warnings}"
        assert not summary.unresolved_conflicts, summary.unresolved_conflicts
        self.record(device)
        return summary

    def settle_and_check(self) -> None:
        for _ in range(QUIET_ROUNDS):
            if sum(self.sync(device).actions for device in self.devices) == 0:
                break
        else:
            raise AssertionError("the devices never became quiet:\n" + "\n".join(self.log))
        first = self.devices[0]
        library = self.server.library(first)
        self.paths_seen.update(library)
        # 1. convergence
        for device in self.devices:
            assert folder_tree(device.folder) == library, f"{device.name} differs from the server"
        # 3. the feed from the start: each live item once, no tombstone
        changes = read_feed(first, limit=2)
        ids = [c["id"] for c in changes]
        assert len(ids) == len(set(ids)), f"an item came twice: {changes}"
        assert not [c for c in changes if c["deleted"]], changes
        assert {c["path"]: c["content_hash"] for c in changes} == library
        # 2. no loss
        live = set(library.values())
        for content_hash, where in sorted(self.synced_contents.items()):
            if content_hash in live:
                continue
            found = reachable_hash(first, self.paths_seen, content_hash)
            assert found is not None, f"lost the content {where} had ({content_hash[:12]})"

    # -- rules --------------------------------------------------------------

    @rule(index=DEVICE_INDEX, path=st.sampled_from(PATHS), content=CONTENTS)
    def create(self, index: int, path: str, content: bytes) -> None:
        device = self.device(index)
        target = device.folder / path
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        self.log.append(f"{device.name}: create {path} {content!r}")

    @rule(index=DEVICE_INDEX, data=st.data(), content=CONTENTS)
    def edit(self, index: int, data: st.DataObject, content: bytes) -> None:
        device = self.device(index)
        files = self.files(device)
        if not files:
            return
        path = data.draw(st.sampled_from(files), label="path")
        (device.folder / path).write_bytes(content)
        self.log.append(f"{device.name}: edit {path} {content!r}")

    @rule(index=DEVICE_INDEX, data=st.data())
    def delete(self, index: int, data: st.DataObject) -> None:
        device = self.device(index)
        files = self.files(device)
        if not files:
            return
        path = data.draw(st.sampled_from(files), label="path")
        (device.folder / path).unlink()
        self.log.append(f"{device.name}: delete {path}")

    @rule(index=DEVICE_INDEX, data=st.data(), to=st.sampled_from(PATHS))
    def move(self, index: int, data: st.DataObject, to: str) -> None:
        device = self.device(index)
        files = self.files(device)
        if not files or (device.folder / to).exists():
            return
        path = data.draw(st.sampled_from(files), label="path")
        (device.folder / to).parent.mkdir(parents=True, exist_ok=True)
        (device.folder / path).rename(device.folder / to)
        self.log.append(f"{device.name}: move {path} -> {to}")

    @rule(index=DEVICE_INDEX, src=st.sampled_from(DIRS), dst=st.sampled_from(DIRS))
    def rename_folder(self, index: int, src: str, dst: str) -> None:
        device = self.device(index)
        if not (device.folder / src).is_dir() or (device.folder / dst).exists():
            return
        (device.folder / src).rename(device.folder / dst)
        self.log.append(f"{device.name}: rename folder {src} -> {dst}")

    @rule(index=DEVICE_INDEX)
    def sync_one(self, index: int) -> None:
        self.sync(self.device(index))

    @rule(index=DEVICE_INDEX, at=st.integers(min_value=0, max_value=1), after=st.booleans())
    def crash_mid_transfer(self, index: int, at: int, after: bool) -> None:
        device = self.device(index)
        transport = CrashingTransport(at=at, after=after)
        try:
            summary, _ = run_pass(device, transport)
        except Crash as exc:
            self.log.append(f"{device.name}: crash {exc} (after={after})")
            return
        self.log.append(f"{device.name}: no crash, {summary.actions} actions")
        if summary.settled and not summary.failed:
            self.record(device)

    @precondition(lambda self: self.restarts < 1)
    @rule()
    def restart_server(self) -> None:
        process = self.server.process
        assert process is not None
        process.kill()
        process.wait()
        self.server.start()
        self.restarts += 1
        self.log.append("server restarted (SIGKILL)")

    @rule()
    def settle(self) -> None:
        self.settle_and_check()


@pytest.fixture(scope="module")
def machine_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of this module's own: the machine kills it, so it is shared with no one."""
    root = tmp_path_factory.mktemp("machine-server")
    server = Server(data_dir=root / "data")
    server.data_dir.mkdir(parents=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def machine_class(server: Server, root: Path) -> type[ConvergenceMachine]:
    return type("Machine", (ConvergenceMachine,), {"server": server, "root": root})


def test_random_interleavings_converge_without_loss(machine_server: Server, tmp_path: Path) -> None:
    run_state_machine_as_test(
        machine_class(machine_server, tmp_path),
        settings=settings(
            max_examples=8,
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


# -- what the machine found ---------------------------------------------------------


@pytest.fixture
def pair(machine_server: Server, tmp_path: Path) -> tuple[Device, Device]:
    username = f"regression{os.getpid()}x{next(_users)}"
    machine_server.add_user(username)
    return (
        register_device(machine_server, username, tmp_path / "A", "A"),
        register_device(machine_server, username, tmp_path / "B", "B"),
    )


def test_regression_keep_both_conflict_whose_content_another_path_uploads_is_settled(
    machine_server: Server, pair: tuple[Device, Device]
) -> None:
    """Shrunk from the machine. B's new `d2/b.txt` conflicts with A's file moved
    there; its content is new, and `a.txt` holds the same content, so it travels
    once (for `a.txt`). The conflict was reported while the content was missing,
    so keep_both could not apply then, and it stayed open for good: the client
    never completed it once the bytes were on the server."""
    a, b = pair
    a.write("d1/b.txt", b"")
    for device in (a, b):
        assert run_pass(device)[0].failed == {}
    (b.folder / "d1").rename(b.folder / "d2")
    b.write("d2/b.txt", b"yx")
    (a.folder / "d2").mkdir()
    (a.folder / "d1/b.txt").rename(a.folder / "d2/b.txt")
    assert run_pass(a)[0].actions == 1
    b.write("a.txt", b"yx")

    summary, warnings = run_pass(b)
    assert summary.unresolved_conflicts == [], warnings
    assert not summary.failed
    with b.api() as client:
        assert client.get("/api/v1/sync/conflicts").json()["conflicts"] == []
    run_pass(a)
    library = machine_server.library(a)
    assert a.tree() == b.tree() == library
    assert sorted(library.values()) == sorted(
        [hash_bytes(b""), hash_bytes(b"yx"), hash_bytes(b"yx")]
    )
    assert any(path.startswith("d2/b (conflict B ") for path in library)
