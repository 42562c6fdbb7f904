"""RFC 9110 section 13 for downloads: entity-tag lists, precedence, If-Range."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shelfsync.server.api.conditional import (
    Precondition,
    evaluate_preconditions,
    http_date,
    if_range_allows,
    parse_etags,
)

TAG = "abc123"
MODIFIED = datetime(2024, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
LAST_MODIFIED = "Tue, 02 Jan 2024 03:04:05 GMT"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('"abc123"', [(False, TAG)]),
        ('W/"abc123"', [(True, TAG)]),
        ("*", []),
        ('"a", W/"b"', [(False, "a"), (True, "b")]),
        ('"a,b", "c"', [(False, "a,b"), (False, "c")]),  # a comma is a valid etagc
        (' , "a" ,, ', [(False, "a")]),
        ('""', [(False, "")]),
        ("abc123", None),  # unquoted
        ('"a" "b"', None),  # no comma between elements
        ('w/"a"', None),  # the weak prefix is case-sensitive
        ('"a', None),
        ("", None),
        ('"a b"', None),  # SP is not an etagc
    ],
)
def test_entity_tag_lists(header: str, expected: list[tuple[bool, str]] | None) -> None:
    assert parse_etags(header) == expected


def _evaluate(**headers: str) -> Precondition:
    values: dict[str, str | None] = {
        "if_match": None,
        "if_unmodified_since": None,
        "if_none_match": None,
        "if_modified_since": None,
    }
    values.update(headers)
    return evaluate_preconditions(etag_opaque=TAG, modified=MODIFIED, **values)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, Precondition.PROCEED),
        ({"if_none_match": f'"{TAG}"'}, Precondition.NOT_MODIFIED),
        ({"if_none_match": f'W/"{TAG}"'}, Precondition.NOT_MODIFIED),
        ({"if_none_match": "*"}, Precondition.NOT_MODIFIED),
        ({"if_none_match": '"other"'}, Precondition.PROCEED),
        ({"if_none_match": "bogus"}, Precondition.PROCEED),
        ({"if_modified_since": LAST_MODIFIED}, Precondition.NOT_MODIFIED),
        ({"if_modified_since": "Tue, 02 Jan 2024 03:04:04 GMT"}, Precondition.PROCEED),
        ({"if_modified_since": "yesterday"}, Precondition.PROCEED),
        # If-None-Match present: If-Modified-Since is not looked at (13.2.2 step 4)
        ({"if_none_match": '"x"', "if_modified_since": LAST_MODIFIED}, Precondition.PROCEED),
        ({"if_match": f'"{TAG}"'}, Precondition.PROCEED),
        ({"if_match": "*"}, Precondition.PROCEED),
        ({"if_match": '"other"'}, Precondition.FAILED),
        ({"if_match": f'W/"{TAG}"'}, Precondition.FAILED),  # strong comparison
        ({"if_unmodified_since": LAST_MODIFIED}, Precondition.PROCEED),
        ({"if_unmodified_since": "Mon, 01 Jan 2024 00:00:00 GMT"}, Precondition.FAILED),
        # If-Match present: If-Unmodified-Since is not looked at (13.2.2 step 2)
        (
            {"if_match": f'"{TAG}"', "if_unmodified_since": "Mon, 01 Jan 2024 00:00:00 GMT"},
            Precondition.PROCEED,
        ),
        # a failing If-Match wins over a matching If-None-Match (step 1 first)
        ({"if_match": '"other"', "if_none_match": "*"}, Precondition.FAILED),
    ],
)
def test_precondition_order(headers: dict[str, str], expected: Precondition) -> None:
    assert _evaluate(**headers) is expected


@pytest.mark.parametrize(
    ("if_range", "allowed"),
    [
        (None, True),
        (f'"{TAG}"', True),
        (f'W/"{TAG}"', False),
        ('"other"', False),
        ("*", False),
        (f'"{TAG}", "{TAG}"', False),
        (LAST_MODIFIED, False),
    ],
)
def test_if_range_needs_exactly_our_strong_etag(if_range: str | None, allowed: bool) -> None:
    assert if_range_allows(if_range, TAG) is allowed


def test_http_date_is_imf_fixdate_in_gmt() -> None:
    assert http_date(MODIFIED) == LAST_MODIFIED
