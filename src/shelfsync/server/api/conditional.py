"""Conditional requests for downloads (RFC 9110 section 13), evaluated in its order.

Section 13.2.2: If-Match (else If-Unmodified-Since) can fail with 412;
then If-None-Match (else If-Modified-Since) can answer 304 for GET and HEAD;
If-Range, last, only decides whether a Range is honoured. Our ETags are
strong (the content hash), and Last-Modified has one-second resolution.
A header that does not parse is ignored, as section 13.1 allows.
"""

from __future__ import annotations

import enum
import functools
import re
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime

__all__ = [
    "Precondition",
    "evaluate_preconditions",
    "http_date",
    "if_range_allows",
    "parse_etags",
]

# entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE (section 8.8.3), one list element.
_ETAG = re.compile(r'[ \t]*(W/)?"([\x21\x23-\x7e\x80-\xff]*)"[ \t]*(?:,|$)')


class Precondition(enum.Enum):
    """What the conditional headers decide, before any Range is looked at."""

    PROCEED = "proceed"  # send the content (or the ranges asked for)
    NOT_MODIFIED = "not_modified"  # 304: the caller's copy is current
    FAILED = "failed"  # 412: the caller's precondition does not hold


@functools.lru_cache(maxsize=1024)  # a client fetching ranges asks the same file's often
def http_date(when: datetime) -> str:
    """IMF-fixdate (section 5.6.7), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`."""
    return format_datetime(when.astimezone(UTC).replace(microsecond=0), usegmt=True)


def _parse_date(value: str) -> datetime | None:
    try:
        parsed = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def parse_etags(value: str) -> list[tuple[bool, str]] | None:
    """(weak, opaque-tag) per element of an entity-tag list; [] for `*`; None if invalid."""
    text = value.strip(" \t")
    if text == "*":
        return []
    tags: list[tuple[bool, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos] in ", \t":  # empty list elements are allowed (section 5.6.1)
            pos += 1
            continue
        match = _ETAG.match(text, pos)
        if match is None:
            return None
        tags.append((match[1] is not None, match[2]))
        pos = match.end()
    return tags or None


def _matches(header: str, opaque: str, *, weak_ok: bool) -> bool | None:
    """Whether a list (or `*`) matches our strong tag; None when the header is invalid."""
    tags = parse_etags(header)
    if tags is None:
        return None
    if not tags:  # "*": any current representation, and there is one
        return True
    return any(tag == opaque and (weak_ok or not weak) for weak, tag in tags)


def _modified_after(modified: datetime, header: str) -> bool | None:
    since = _parse_date(header)
    if since is None:
        return None
    return modified.replace(microsecond=0) > since


def evaluate_preconditions(
    *,
    etag_opaque: str,
    modified: datetime,
    if_match: str | None,
    if_unmodified_since: str | None,
    if_none_match: str | None,
    if_modified_since: str | None,
) -> Precondition:
    """Steps 1-4 of section 13.2.2 for a GET or HEAD of a representation that exists."""
    if if_match is not None:
        # Strong comparison (section 13.1.1).
        if _matches(if_match, etag_opaque, weak_ok=False) is False:
            return Precondition.FAILED
    elif if_unmodified_since is not None and _modified_after(modified, if_unmodified_since):
        return Precondition.FAILED
    if if_none_match is not None:
        # Weak comparison (section 13.1.2): W/"x" matches "x".
        if _matches(if_none_match, etag_opaque, weak_ok=True):
            return Precondition.NOT_MODIFIED
    elif if_modified_since is not None and _modified_after(modified, if_modified_since) is False:
        return Precondition.NOT_MODIFIED
    return Precondition.PROCEED


def if_range_allows(if_range: str | None, etag_opaque: str) -> bool:
    """Whether a Range is honoured: no If-Range, or one naming our strong ETag.

    Section 13.1.5 also allows a date, but a date can only be trusted as a
    validator when it is strong, and client mtimes (our Last-Modified) are
    not: two edits within a second, or a clock set back, keep the same date.
    So a date, a weak tag or another tag means: send the whole content (200).
    """
    if if_range is None:
        return True
    tags = parse_etags(if_range)
    return tags is not None and len(tags) == 1 and tags[0] == (False, etag_opaque)
