"""The report answer written without models is byte for byte what ReportResponse gives."""

from __future__ import annotations

from shelfsync.protocol.sync import ReportResponse
from shelfsync.server.api.routes.sync import report_body
from shelfsync.server.api.wire import report_result_out
from shelfsync.server.domain.errors import InvalidInput, InvalidPath
from shelfsync.server.services.report import ReportResult, ReportStatus


def _model_bytes(results: list[ReportResult]) -> bytes:
    return (
        ReportResponse(results=[report_result_out(r) for r in results])
        .model_dump_json(by_alias=True)
        .encode()
    )


RESULTS = [
    ReportResult("Bücher/Dune — 1.epub", ReportStatus.APPLIED, id="i1", revision=3, seq=2**40),
    ReportResult("a.txt", ReportStatus.UNCHANGED, id="i2", revision=1, seq=7),
    ReportResult("new.txt", ReportStatus.UPLOAD_REQUIRED),
    ReportResult("c.txt", ReportStatus.CONFLICT, id="i3", revision=2, seq=9, conflict_id="k1"),
    ReportResult('q"uote\\\n\t.txt', ReportStatus.APPLIED, id="i4", revision=1, seq=10),
    ReportResult("../x", ReportStatus.REJECTED, error=InvalidPath("path segments must not be")),
    ReportResult("b.txt", ReportStatus.REJECTED, error=InvalidInput("size must not be negative")),
]


def test_report_body_is_the_models_json() -> None:
    assert report_body(RESULTS) == _model_bytes(RESULTS)
