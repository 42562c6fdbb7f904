"""What a pass tells the user: one line, a JSON document, and the exit status.

Exit statuses of `shelfsync sync`: 0 in sync; 1 something failed (the paths
are listed) or the pass did not settle; 3 in sync except for conflicts that
wait for a person (`--conflicts manual`).
"""

from __future__ import annotations

import json

from shelfsync.client.progress import Reporter, format_bytes
from shelfsync.client.sync import PassSummary, SyncEngine

__all__ = ["EXIT_CONFLICTS", "EXIT_FAILED", "exit_status", "json_summary", "summary_line"]

EXIT_FAILED = 1
# In sync except for conflicts that wait for a person (`--conflicts manual`).
EXIT_CONFLICTS = 3


def summary_line(summary: PassSummary, engine: SyncEngine) -> str:
    c = engine.counters
    parts = [f"{'in sync' if summary.settled and not summary.failed else 'synced'}"]
    if c.uploaded_files or c.chunks_sent:
        already = (
            f", {c.chunks_already_there} already on the server" if c.chunks_already_there else ""
        )
        parts.append(
            f"uploaded {c.uploaded_files} file(s), {format_bytes(c.uploaded_bytes)} "
            f"in {c.chunks_sent} chunk(s){already}"
        )
    if c.downloaded_files or c.downloaded_bytes:
        resumed = (
            f", resumed after {format_bytes(c.resumed_download_bytes)}"
            if c.resumed_download_bytes
            else ""
        )
        parts.append(
            f"downloaded {c.downloaded_files} file(s), {format_bytes(c.downloaded_bytes)}{resumed}"
        )
    return f"{'; '.join(parts)} ({summary.elapsed_s:.1f} s)"


def json_summary(summary: PassSummary, engine: SyncEngine) -> str:
    c = engine.counters
    return json.dumps(
        {
            "settled": summary.settled,
            "rounds": summary.rounds,
            "actions": summary.actions,
            "failed": summary.failed,
            "unresolved_conflicts": summary.unresolved_conflicts,
            "pending_changes": summary.pending_changes,
            "elapsed_s": round(summary.elapsed_s, 3),
            "uploaded_files": c.uploaded_files,
            "uploaded_bytes": c.uploaded_bytes,
            "chunks_sent": c.chunks_sent,
            "chunks_already_there": c.chunks_already_there,
            "downloaded_files": c.downloaded_files,
            "downloaded_bytes": c.downloaded_bytes,
            "resumed_download_bytes": c.resumed_download_bytes,
        }
    )


def exit_status(summary: PassSummary, reporter: Reporter) -> int:
    for path, why in sorted(summary.failed.items()):
        reporter.warn(f"not synced: {path}: {why}")
    if summary.failed or not summary.settled:
        return EXIT_FAILED
    if summary.unresolved_conflicts:
        reporter.warn(
            f"{len(summary.unresolved_conflicts)} conflict(s) wait for you: `shelfsync conflicts`"
        )
        return EXIT_CONFLICTS
    return 0
