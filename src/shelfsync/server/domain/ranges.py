"""Byte ranges of a `Range` request header (RFC 9110 section 14), pure.

`parse_range(header, size)` answers one of three ways:

- a list of `(first, last)` byte positions, both inclusive, clamped to the
  content (`last <= size - 1`): answer 206 with those parts;
- None: ignore the header and send the whole content with 200. RFC 9110
  section 14.2 lets a server ignore a Range it does not understand or will not
  honour; we ignore another unit than `bytes`, a syntactically invalid header
  (including `first > last`), a header longer than `MAX_HEADER_CHARS`, and a
  set that still has more than `MAX_PARTS` parts after coalescing. Sending the
  whole content is always a correct answer, and one a client can resume from;
- `RangeNotSatisfiable`: no range overlaps the content (every `first >= size`,
  or only `-0` suffixes), answered with 416 and `Content-Range: bytes */size`.

Overlapping or adjacent ranges are coalesced (section 14.2 "MAY coalesce"), so
`bytes=0-,0-,0-...` cannot make us send the content many times over. When
nothing needed coalescing the parts keep the order they were asked in, as
section 15.3.7.2 recommends; otherwise they come in ascending order.
"""

from __future__ import annotations

import re

from shelfsync.server.domain.errors import RangeNotSatisfiable

__all__ = ["MAX_HEADER_CHARS", "MAX_PARTS", "ByteRange", "parse_range"]

MAX_HEADER_CHARS = 4096
"""A longer Range header is ignored (no honest client needs that many ranges)."""

MAX_PARTS = 16
"""More parts than this, after coalescing, and the header is ignored (200)."""

ByteRange = tuple[int, int]

# range-spec = int-range / suffix-range (RFC 9110 section 14.1.1); ASCII digits
# only, so str.isdigit's Unicode digits ("٣") never parse as positions.
_SPEC = re.compile(r"(?:(?P<first>[0-9]+)-(?P<last>[0-9]*)|-(?P<suffix>[0-9]+))", re.ASCII)
# range-unit is a token, compared case-insensitively (section 14.1).
_UNIT = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", re.ASCII)
_OWS = " \t"


def parse_range(header: str, size: int) -> list[ByteRange] | None:
    """The byte ranges `header` selects from content of `size` bytes (see module doc)."""
    if size < 0:
        raise ValueError("size must not be negative")
    if len(header) > MAX_HEADER_CHARS:
        return None
    unit, sep, range_set = header.strip(_OWS).partition("=")
    if not sep or not _UNIT.fullmatch(unit) or unit.lower() != "bytes":
        return None
    specs = _parse_specs(range_set)
    if specs is None:
        return None
    wanted: list[ByteRange] = []
    empty_suffix_asked = False
    for first, last, suffix in specs:
        if suffix is not None:
            if suffix == 0:
                continue  # "-0" selects nothing: unsatisfiable (section 14.1.3)
            if size == 0:
                empty_suffix_asked = True
                continue
            wanted.append((max(size - suffix, 0), size - 1))
        elif first < size:
            wanted.append((first, size - 1 if last is None else min(last, size - 1)))
    if not wanted:
        if empty_suffix_asked:
            # "The last n bytes" of empty content is the whole (empty) content:
            # satisfiable by the letter of section 14.1.1, yet no Content-Range
            # can describe zero bytes, so the honest answer is the 200.
            return None
        raise RangeNotSatisfiable(size=size)
    parts = _coalesce(wanted)
    if len(parts) > MAX_PARTS:
        return None
    return parts


def _parse_specs(range_set: str) -> list[tuple[int, int | None, int | None]] | None:
    """(first, last, suffix) per range-spec, or None when any is invalid."""
    specs: list[tuple[int, int | None, int | None]] = []
    # 1#range-spec: a comma list where recipients accept empty elements and
    # optional whitespace around the commas (section 5.6.1).
    for element in range_set.split(","):
        spec = element.strip(_OWS)
        if not spec:
            continue
        match = _SPEC.fullmatch(spec)
        if match is None:
            return None
        if match["suffix"] is not None:
            specs.append((0, None, int(match["suffix"])))
            continue
        first = int(match["first"])
        last = int(match["last"]) if match["last"] else None
        if last is not None and last < first:
            return None  # an invalid int-range makes the whole header invalid
        specs.append((first, last, None))
    return specs or None


def _coalesce(ranges: list[ByteRange]) -> list[ByteRange]:
    """Merge overlapping and adjacent ranges; keep the asked order when none merge."""
    ordered = sorted(ranges)
    merged: list[ByteRange] = [ordered[0]]
    for first, last in ordered[1:]:
        prev_first, prev_last = merged[-1]
        if first <= prev_last + 1:
            merged[-1] = (prev_first, max(prev_last, last))
        else:
            merged.append((first, last))
    return ranges if len(merged) == len(ranges) else merged
