"""The push sends each batch's report while the previous batch's content goes
up (push.py), against the real app in process (conftest.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from shelfsync.client import push
from shelfsync.client.errors import ServerUnreachable
from shelfsync.client.http import ApiClient
from shelfsync.client.state import State
from shelfsync.content_hash import hash_bytes, hash_file
from shelfsync.protocol.sync import ReportResult
from tests.client.helpers import run_pass, tree


def _folder(tmp_path: Path, name: str, files: dict[str, bytes]) -> Path:
    root = (tmp_path / name).resolve()
    root.mkdir()
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


class _Recorder:
    """Wraps a client's report and batch upload: the order they start and
    end in, and the content each upload carried."""

    def __init__(self, api: ApiClient, *, hold_first_upload_for_report: int = 0) -> None:
        self.events: list[str] = []
        self.uploaded: list[str] = []
        self._api = api
        self._reports = 0
        self._report_started: dict[int, threading.Event] = {}
        self._hold_for = hold_first_upload_for_report
        self._lock = threading.Lock()
        self._report, self._upload = api.report_json, api.upload_batch

    def started(self, n: int) -> threading.Event:
        with self._lock:
            return self._report_started.setdefault(n, threading.Event())

    def report_json(self, changes: list[dict[str, object]]) -> list[ReportResult]:
        with self._lock:
            self._reports += 1
            n = self._reports
            self.events.append(f"report {n} sent")
        self.started(n).set()
        results = self._report(changes)
        with self._lock:
            self.events.append(f"report {n} answered")
        return results

    def upload_batch(self, body: bytes) -> list[ReportResult]:
        if self._hold_for:
            # Without a report sent ahead, this waits out its timeout and the
            # order below shows the report after the upload.
            self.started(self._hold_for).wait(5)
        results = self._upload(body)
        with self._lock:
            self.events.append("upload answered")
        return results


@pytest.fixture
def small_report_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(push, "REPORT_BATCH", 3)


@pytest.mark.usefixtures("small_report_batches")
def test_the_next_report_travels_while_the_uploads_of_a_batch_go_up(
    tmp_path: Path, make_api: Callable[[str], ApiClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    laptop, phone = make_api("laptop"), make_api("phone")
    files = {f"f{i}.txt": f"file {i}".encode() for i in range(7)}
    files["f4.txt"] = files["f0.txt"]  # second batch, the first batch's content
    a = _folder(tmp_path, "a", files)
    recorder = _Recorder(laptop, hold_first_upload_for_report=2)
    monkeypatch.setattr(laptop, "report_json", recorder.report_json)
    monkeypatch.setattr(laptop, "upload_batch", recorder.upload_batch)

    summary = run_pass(laptop, a)

    assert summary.settled, summary
    assert not summary.failed, summary
    events = recorder.events
    # Reports of 3, 3 and 1 changes, one after another; the second went before
    # the first batch's upload was answered.
    assert events.index("report 2 sent") < events.index("upload answered")
    assert events.index("report 1 answered") < events.index("report 2 sent")
    assert events.index("report 2 answered") < events.index("report 3 sent")
    b = _folder(tmp_path, "b", {})
    assert run_pass(phone, b).settled
    assert tree(b) == tree(a)
    assert hash_file(b / "f4.txt") == hash_bytes(b"file 0")


@pytest.mark.usefixtures("small_report_batches")
def test_an_upload_cut_off_still_records_what_the_report_sent_ahead_applied(
    tmp_path: Path, make_api: Callable[[str], ApiClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    laptop = make_api("laptop")
    a = _folder(tmp_path, "a", {"held.txt": b"content the server holds"})
    assert run_pass(laptop, a).settled
    # Three new contents (the first batch, uploaded), then a copy of held
    # content (the second batch: applied by its report alone).
    for name in ("n1.txt", "n2.txt", "n3.txt"):
        (a / name).write_bytes(f"new {name}".encode())
    (a / "z-copy.txt").write_bytes(b"content the server holds")
    recorder = _Recorder(laptop)
    monkeypatch.setattr(laptop, "report_json", recorder.report_json)

    def cut_off(body: bytes) -> list[ReportResult]:
        assert recorder.started(2).wait(5)
        while "report 2 answered" not in recorder.events:
            threading.Event().wait(0.01)
        raise ServerUnreachable("connection lost")

    monkeypatch.setattr(laptop, "upload_batch", cut_off)

    with pytest.raises(ServerUnreachable):
        run_pass(laptop, a)

    with State(a) as state:
        synced = state.synced()
    assert "z-copy.txt" in synced  # applied on the server: recorded here too
    assert not {"n1.txt", "n2.txt", "n3.txt"} & set(synced)
    monkeypatch.undo()
    summary = run_pass(laptop, a)
    assert summary.settled, summary
    assert not summary.failed, summary
    assert not summary.unresolved_conflicts, summary
    with State(a) as state:
        assert state.synced()["z-copy.txt"].revision == 1
