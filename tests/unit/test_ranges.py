"""RFC 9110 Range parsing: the header table -> ranges, ignore (None) or 416."""

from __future__ import annotations

import pytest

from shelfsync.server.domain.errors import RangeNotSatisfiable
from shelfsync.server.domain.ranges import MAX_HEADER_CHARS, MAX_PARTS, parse_range

SIZE = 1000


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        # single int-range, inclusive on both ends
        ("bytes=0-0", [(0, 0)]),
        ("bytes=0-99", [(0, 99)]),
        ("bytes=999-999", [(999, 999)]),
        # last-pos past the end is clamped (section 14.1.2)
        ("bytes=500-5000", [(500, 999)]),
        ("bytes=0-999999999999999999999999", [(0, 999)]),
        # open-ended
        ("bytes=0-", [(0, 999)]),
        ("bytes=990-", [(990, 999)]),
        # suffix: the last n bytes; more than the size means all of it
        ("bytes=-1", [(999, 999)]),
        ("bytes=-10", [(990, 999)]),
        ("bytes=-1000", [(0, 999)]),
        ("bytes=-5000", [(0, 999)]),
        # several, asked order kept when nothing overlaps (section 15.3.7.2)
        ("bytes=0-9,100-199,-5", [(0, 9), (100, 199), (995, 999)]),
        ("bytes=500-599,0-9", [(500, 599), (0, 9)]),
        # list syntax: OWS and empty elements (section 5.6.1)
        ("bytes= 0-9 , 20-29", [(0, 9), (20, 29)]),
        ("bytes=,0-9,,20-29,", [(0, 9), (20, 29)]),
        # the unit is case-insensitive
        ("Bytes=0-9", [(0, 9)]),
        ("BYTES=0-9", [(0, 9)]),
        # overlapping and adjacent ranges are coalesced, then ascending
        ("bytes=0-9,5-19", [(0, 19)]),
        ("bytes=10-19,0-9", [(0, 19)]),
        ("bytes=500-599,0-9,5-14", [(0, 14), (500, 599)]),
        ("bytes=0-,0-,0-,0-", [(0, 999)]),
        ("bytes=-10,990-999", [(990, 999)]),
        # unsatisfiable members are dropped while one is satisfiable
        ("bytes=0-9,2000-3000", [(0, 9)]),
        ("bytes=-0,0-9", [(0, 9)]),
    ],
)
def test_satisfiable_header_selects_these_ranges(
    header: str, expected: list[tuple[int, int]]
) -> None:
    assert parse_range(header, SIZE) == expected


@pytest.mark.parametrize(
    "header",
    [
        "items=0-9",  # another unit: ignored (section 14.2)
        "bytes 0-9",  # no "="
        "bytes=",  # no range-spec
        "bytes=,",
        "bytes=abc",
        "bytes=0-9-",
        "bytes=--5",
        "bytes=9-0",  # last < first: an invalid int-range
        "bytes=0-9,9-0",  # one invalid member invalidates the header
        "bytes=0x10-20",
        "bytes=+5-9",
        "bytes=-",
        "bytes=٣-٩",  # Unicode digits are not DIGIT
        "bytes = 0-9",  # no whitespace around "="
        "=0-9",
        "bytes=0 - 9",
        "bytes=0-9;q=1",
    ],
)
def test_invalid_or_foreign_header_is_ignored(header: str) -> None:
    assert parse_range(header, SIZE) is None


@pytest.mark.parametrize(
    "header",
    [
        "bytes=1000-",  # first-pos == size
        "bytes=1000-1000",
        "bytes=2000-3000",
        "bytes=-0",  # a zero suffix selects nothing
        "bytes=-0,-0",
        "bytes=1000-,5000-6000,-0",
    ],
)
def test_no_range_overlapping_the_content_is_unsatisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as caught:
        parse_range(header, SIZE)
    assert caught.value.size == SIZE


@pytest.mark.parametrize("header", ["bytes=0-", "bytes=0-0", "bytes=-0"])
def test_int_range_of_empty_content_is_unsatisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as caught:
        parse_range(header, 0)
    assert caught.value.size == 0


def test_suffix_of_empty_content_sends_the_whole_empty_content() -> None:
    # "the last 5 bytes" of nothing is all of it, which only a 200 can carry.
    assert parse_range("bytes=-5", 0) is None


def test_more_parts_than_the_limit_after_coalescing_are_ignored() -> None:
    specs = ",".join(f"{i * 10}-{i * 10 + 1}" for i in range(MAX_PARTS + 1))
    assert parse_range(f"bytes={specs}", SIZE) is None


def test_exactly_the_part_limit_is_served() -> None:
    specs = ",".join(f"{i * 10}-{i * 10 + 1}" for i in range(MAX_PARTS))
    ranges = parse_range(f"bytes={specs}", SIZE)
    assert ranges is not None
    assert len(ranges) == MAX_PARTS


def test_many_overlapping_ranges_coalesce_under_the_limit() -> None:
    specs = ",".join(f"{i}-{i + 10}" for i in range(100))
    assert parse_range(f"bytes={specs}", SIZE) == [(0, 109)]


def test_header_longer_than_the_limit_is_ignored() -> None:
    header = "bytes=0-9" + "," * MAX_HEADER_CHARS
    assert len(header) > MAX_HEADER_CHARS
    assert parse_range(header, SIZE) is None


def test_negative_size_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="negative"):
        parse_range("bytes=0-1", -1)
