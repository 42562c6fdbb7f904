"""Three devices, one library: every kind of change, then byte-for-byte agreement."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.harness import Device, Server, folder_dirs

pytestmark = pytest.mark.e2e


def item_ids(server: Server, device: Device) -> dict[str, str]:
    with device.api() as client:
        page = client.get("/api/v1/sync/changes", params={"limit": 1000}).json()
    return {c["path"]: c["id"] for c in page["changes"] if not c["deleted"]}


def assert_all_agree(server: Server, *devices: Device) -> dict[str, str]:
    library = server.library(devices[0])
    for device in devices:
        assert device.tree() == library, f"{device.name} differs from the server"
        assert folder_dirs(device.folder) == folder_dirs(devices[0].folder)
    return library


def test_create_edit_delete_move_and_folder_rename_on_three_devices(
    server: Server, make_device: Callable[..., Device]
) -> None:
    a, b, c = make_device("A"), make_device("B"), make_device("C")
    a.write("music/song.mp3", os.urandom(300_000))
    a.write("docs/readme.md", "read me\n")
    a.write("photos/2024/x.jpg", os.urandom(50_000))
    a.write("photos/2024/y.jpg", os.urandom(60_000))
    a.write("notes.txt", "v1\n")
    a.write("todo.txt", "buy milk\n")
    a.write("empty.txt", b"")
    taken_ns = 1_500_000_000_123_000_000  # 2017, to the millisecond
    os.utime(a.folder / "notes.txt", ns=(taken_ns, taken_ns))
    for device in (a, b, c):
        assert device.sync()["exit"] == 0
    assert (c.folder / "notes.txt").stat().st_mtime_ns == taken_ns  # mtime restored
    before = item_ids(server, a)
    assert_all_agree(server, a, b, c)

    # A: create, edit, delete.
    a.write("new/from-a.txt", "hello from A\n")
    a.write("notes.txt", "v2 from A\n")
    (a.folder / "docs/readme.md").unlink()
    # B: rename a folder, move a file into a new folder.
    (b.folder / "photos/2024").rename(b.folder / "photos/2025")
    (b.folder / "music/old").mkdir()
    (b.folder / "music/song.mp3").rename(b.folder / "music/old/song.mp3")
    # C: rename a file, and edit a file that B is moving (the edit follows the move).
    (c.folder / "todo.txt").rename(c.folder / "done.txt")
    c.write("photos/2024/x.jpg", b"edited on C" + os.urandom(1000))
    edited_x = (c.folder / "photos/2024/x.jpg").read_bytes()

    summaries: list[dict[str, Any]] = [d.sync() for d in (a, b, c, a, b)]
    assert all(s["exit"] == 0 for s in summaries), summaries
    library = assert_all_agree(server, a, b, c)

    assert set(library) == {
        "music/old/song.mp3",
        "photos/2025/x.jpg",
        "photos/2025/y.jpg",
        "notes.txt",
        "done.txt",
        "new/from-a.txt",
        "empty.txt",
    }
    assert (b.folder / "photos/2025/x.jpg").read_bytes() == edited_x
    assert (c.folder / "notes.txt").read_text() == "v2 from A\n"
    # Moves kept the items' ids (reported as moves, not delete + upload).
    after = item_ids(server, a)
    assert after["photos/2025/y.jpg"] == before["photos/2024/y.jpg"]
    assert after["photos/2025/x.jpg"] == before["photos/2024/x.jpg"]
    assert after["music/old/song.mp3"] == before["music/song.mp3"]
    assert after["done.txt"] == before["todo.txt"]
    # Nothing was uploaded again for a move: B sent no chunk at all.
    assert summaries[1]["chunks_sent"] == 0
    # A second pass everywhere finds nothing to do.
    for device in (a, b, c):
        assert device.sync()["actions"] == 0


def test_simultaneous_edits_keep_both_versions_everywhere(
    server: Server, make_device: Callable[..., Device]
) -> None:
    a, b, c = make_device("A"), make_device("B"), make_device("C")
    a.write("shared/report.txt", "original\n")
    for device in (a, b, c):
        device.sync()
    a.write("shared/report.txt", "edited on A\n")
    b.write("shared/report.txt", "edited on B\n")
    for device in (a, b, c, a):
        assert device.sync()["exit"] == 0
    library = assert_all_agree(server, a, b, c)
    contents = sorted((c.folder / path).read_text() for path in library)
    assert contents == ["edited on A\n", "edited on B\n"]
    copy = next(p for p in library if p != "shared/report.txt")
    assert copy.startswith("shared/report (conflict B ")
    assert copy.endswith(").txt")


def test_local_delete_of_a_file_edited_elsewhere_brings_the_edit_back(
    server: Server, make_device: Callable[..., Device]
) -> None:
    a, b = make_device("A"), make_device("B")
    a.write("keep.txt", "v1\n")
    a.sync()
    b.sync()
    b.write("keep.txt", "v2 from B\n")
    (a.folder / "keep.txt").unlink()
    b.sync()
    assert a.sync()["exit"] == 0
    assert (a.folder / "keep.txt").read_text() == "v2 from B\n"
    assert_all_agree(server, a, b)


def test_remote_delete_never_removes_a_local_edit(
    server: Server, make_device: Callable[..., Device]
) -> None:
    a, b = make_device("A"), make_device("B")
    a.write("draft.txt", "v1\n")
    a.sync()
    b.sync()
    (b.folder / "draft.txt").unlink()
    a.write("draft.txt", "v2, still writing\n")
    b.sync()
    assert a.sync()["exit"] == 0
    b.sync()
    library = assert_all_agree(server, a, b)
    assert "v2, still writing\n" in {(a.folder / p).read_text() for p in library}


def test_manual_conflicts_wait_for_resolve(
    server: Server, make_device: Callable[..., Device]
) -> None:
    a, m = make_device("A"), make_device("M", "--conflicts", "manual")
    a.write("plan.txt", "base\n")
    a.sync()
    m.sync()
    a.write("plan.txt", "A's plan\n")
    m.write("plan.txt", "M's plan\n")
    a.sync()
    summary = m.sync(check=False)
    assert summary["exit"] == 3, summary
    assert summary["unresolved_conflicts"] == ["plan.txt"]
    assert (m.folder / "plan.txt").read_text() == "M's plan\n"  # nothing local changed
    assert m.sync(check=False)["exit"] == 3  # still waiting, still untouched
    assert (m.folder / "plan.txt").read_text() == "M's plan\n"

    listing = m.run("conflicts").stdout
    assert "plan.txt" in listing
    with m.api() as client:
        (conflict,) = client.get("/api/v1/sync/conflicts").json()["conflicts"]
    assert conflict["client"]["content_available"] is True
    m.run("resolve", conflict["id"], "--keep-client")
    assert m.sync()["exit"] == 0
    assert a.sync()["exit"] == 0
    assert_all_agree(server, a, m)
    assert (a.folder / "plan.txt").read_text() == "M's plan\n"


def test_status_shows_what_waits_and_logout_removes_the_device(
    server: Server, make_device: Callable[..., Device]
) -> None:
    a, b = make_device("A"), make_device("B")
    a.write("up.txt", "to upload\n")
    status = a.run("status", str(a.folder)).stdout
    assert "to upload (1)" in status
    assert "up.txt (new)" in status
    a.sync()
    status = b.run("status", str(b.folder)).stdout
    assert "to download (1)" in status
    assert "behind the server by 1 change" in status
    b.sync()
    assert "in sync" in b.run("status", str(b.folder)).stdout

    mode = (a.config_dir / "device.json").stat().st_mode & 0o777
    assert mode == 0o600
    assert "password" not in (a.config_dir / "device.json").read_text()
    device_id = a.config()["device_id"]
    a.run("logout")
    assert not (a.config_dir / "device.json").exists()
    with b.api() as client:
        assert client.get(f"/api/v1/sync/devices/{device_id}").status_code == 404
    shutil.rmtree(a.folder / ".shelfsync")
