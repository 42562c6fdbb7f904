"""OpenAPI response declarations: every status a route can answer, problems included."""

from __future__ import annotations

from typing import Any

__all__ = ["PROBLEM_DESCRIPTIONS", "problems"]

PROBLEM_DESCRIPTIONS = {
    304: "Not modified",
    400: "Bad request (`invalid_request`, or a more specific code)",
    401: "Missing, invalid, expired or revoked token",
    403: "Forbidden (another user's resource, or a disabled device)",
    404: "Not found",
    409: "State conflict",
    410: "Gone (expired cursor or upload session)",
    412: "Precondition failed",
    413: "Too large",
    415: "Unsupported media type",
    416: "Range not satisfiable",
    429: "Throttled (see Retry-After)",
    503: "Temporarily unavailable (see Retry-After)",
    507: "Quota exceeded",
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Declare error answers; the app's OpenAPI hook gives them the Problem schema."""
    return {status: {"description": PROBLEM_DESCRIPTIONS[status]} for status in statuses}
