"""sync.plan_input: what the engine hands to the planner (ignored and blocked paths)."""

from __future__ import annotations

from pathlib import Path

from shelfsync.client import plan as p
from shelfsync.client.scan import Scanner
from shelfsync.client.state import RemoteRecord, State, SyncedRecord
from shelfsync.client.sync import plan_input

H = "a" * 64


def test_ignored_names_are_neither_downloaded_nor_deleted(tmp_path: Path) -> None:
    (tmp_path / ".shelfsyncignore").write_text("*.log\n")
    (tmp_path / "kept.txt").write_text("x")
    with State(tmp_path) as state:
        # A remote log (made before this device ignored logs), and a synced one
        # that the new rule now hides from the scan.
        state.apply_remote(
            upserts=[RemoteRecord("r1", "server.log", 1, H, 3, None)], deleted_ids=[], cursor="c"
        )
        state.put_synced(SyncedRecord("old.log", "old.log", "r2", 1, H, 3, 0, 1))
        scan = Scanner(tmp_path).scan(synced=state.synced(), cache={})
        given = plan_input(state, scan, skip=set())
    assert {"server.log", "old.log"} <= given.skip
    actions = p.plan(given)
    assert not [a for a in actions if getattr(a, "path", None) in ("server.log", "old.log")]
    assert (
        p.ReportUpsert(".shelfsyncignore", scan.files[".shelfsyncignore"].content_hash, None)
        in actions
    )
