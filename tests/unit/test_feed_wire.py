"""The feed's hand-written JSON (issue 7) against the models it stands for.

`changes_body` writes a feed page from the rows the page query reads (times
and metadata as the database's text) without building a pydantic model per
change; its JSON must hold exactly the values `ChangesResponse` serializes for
the same items (only the metadata's white space may differ). Rows are made as
either database gives them: SQLite's six-digit fractions, or PostgreSQL's
without trailing zeros. `format_timestamp` was rewritten for speed; it must
format exactly as the isoformat-based version did.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from shelfsync.protocol.common import format_timestamp
from shelfsync.protocol.sync import ChangesResponse
from shelfsync.server.api.wire import change_out, changes_body, wire_time
from shelfsync.server.domain.items import ChangeOp, Item
from shelfsync.server.services.feed import FeedPage
from shelfsync.server.storage.items import FeedRow, feed_row, utc_text

_RESPONSE = TypeAdapter(ChangesResponse)


def _reference_format(value: datetime) -> str:
    """The formula format_timestamp used before it was made faster."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _model_body(items: list[Item], page: FeedPage) -> bytes:
    """What the route answered when it returned the model."""
    model = ChangesResponse(
        changes=[change_out(item) for item in items],
        cursor=page.cursor,
        has_more=page.has_more,
        latest_seq=page.latest_seq,
    )
    return _RESPONSE.dump_json(model)


def _refuse(word: str) -> Any:
    raise AssertionError(f"{word} is not JSON")


def _strict(body: bytes) -> Any:
    """The values of a JSON text, refusing what only Python's json module allows."""
    return json.loads(body, parse_constant=_refuse)


def _postgres_text(text: str) -> str:
    """A time as PostgreSQL's ISO DateStyle writes it: no trailing zeros in the
    fraction, and no fraction when it is 0."""
    whole, _, fraction = text.partition(".")
    fraction = fraction.rstrip("0")
    return f"{whole}.{fraction}" if fraction else whole


def _as_read(item: Item, postgres: bool) -> FeedRow:
    row = feed_row(item)
    if not postgres:
        return row
    return row._replace(
        mtime=None if row.mtime is None else _postgres_text(row.mtime),
        updated_at=_postgres_text(row.updated_at),
    )


_zones = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8)), None]
)
# Away from datetime's limits, where moving to UTC overflows either way.
_instants = st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 30))


@given(_instants, _zones)
def test_format_timestamp_matches_isoformat(value: datetime, zone: timezone | None) -> None:
    local = value.replace(tzinfo=zone)
    assert format_timestamp(local) == _reference_format(local)


_json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()  # NaN and infinities too: stored metadata can hold them
    | st.text(max_size=8)
)


def _json_containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner)


_json_values = st.recursive(_json_leaf, _json_containers, max_leaves=8)
_utc_times = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
_text = st.text(min_size=1, max_size=12)


@st.composite
def _items(draw: st.DrawFn, seq: int) -> Item:
    deleted = draw(st.booleans())
    op = ChangeOp.DELETE if deleted else draw(st.sampled_from([ChangeOp.UPSERT, ChangeOp.MOVE]))
    metadata: dict[str, Any] = draw(st.dictionaries(st.text(max_size=6), _json_values, max_size=3))
    return Item(
        id=draw(st.uuids()).hex,
        user_id="user",
        path=draw(_text),
        revision=draw(st.integers(min_value=1, max_value=2**31 - 1)),
        content_hash=None if deleted else draw(st.sampled_from(["a" * 64, "0f" * 32])),
        size=0 if deleted else draw(st.integers(min_value=0, max_value=2**53)),
        mtime=None if deleted else draw(st.none() | _utc_times),
        metadata={} if deleted else metadata,
        deleted=deleted,
        device_id=draw(st.none() | st.uuids().map(str)),
        updated_at=draw(_utc_times),
        seq=seq,
        op=op,
        from_path=draw(_text) if op is ChangeOp.MOVE else None,
    )


@st.composite
def _pages(draw: st.DrawFn) -> tuple[list[Item], FeedPage]:
    count = draw(st.integers(min_value=0, max_value=6))
    items = [draw(_items(seq)) for seq in range(1, count + 1)]
    if len(items) > 1 and draw(st.booleans()):
        # A batch: changes sharing one changed_at (the formatting is reused).
        items = [replace(i, updated_at=items[0].updated_at) for i in items]
    postgres = draw(st.booleans())
    rows = [_as_read(item, postgres) for item in items]
    page = FeedPage(rows, draw(_text), draw(st.booleans()), count + draw(st.integers(0, 9)))
    return items, page


@settings(max_examples=300)
@given(_pages())
def test_changes_body_holds_the_models_values(drawn: tuple[list[Item], FeedPage]) -> None:
    items, page = drawn
    body = changes_body(page)
    assert _strict(body) == _strict(_model_body(items, page))
    assert [c["seq"] for c in json.loads(body)["changes"]] == [i.seq for i in items]


@given(_instants, st.booleans())
def test_wire_time_of_either_databases_text_is_format_timestamp(
    value: datetime, postgres: bool
) -> None:
    at = value.replace(tzinfo=UTC)
    text = utc_text(at)
    assert wire_time(_postgres_text(text) if postgres else text) == format_timestamp(at)


def test_changes_body_of_unicode_and_control_characters() -> None:
    at = datetime(2026, 11, 26, 18, 27, 41, 123456, tzinfo=UTC)
    item = Item(
        id="id",
        user_id="user",
        path='Bücher/日本語/"quoted"\\\n\t\x01.epub',
        revision=3,
        content_hash="a" * 64,
        size=5,
        mtime=at - timedelta(microseconds=999),
        metadata={"é": ["\u2028", 1.5, 10**30, None], "x": {"y": False}, "n": float("nan")},
        deleted=False,
        device_id=None,
        updated_at=at,
        seq=7,
        op=ChangeOp.MOVE,
        from_path="old/😀.epub",
    )
    for postgres in (False, True):
        page = FeedPage([_as_read(item, postgres)], "cursor", has_more=False, latest_seq=7)
        assert _strict(changes_body(page)) == _strict(_model_body([item], page))
        change = json.loads(changes_body(page))["changes"][0]
        assert change["changed_at"] == "2026-11-26T18:27:41.123Z"
        assert change["metadata"]["n"] is None


def test_changes_body_of_metadata_stored_with_white_space_or_null() -> None:
    at = datetime(2026, 11, 26, 18, 27, 41, 123456, tzinfo=UTC)
    item = Item(
        "id", "user", "a.txt", 1, "a" * 64, 5, None, {}, False, None, at, 1, ChangeOp.UPSERT
    )
    for text, value in ((' {"k" : 1} ', {"k": 1}), ("null", {}), ('{"a": [1, 2]}', {"a": [1, 2]})):
        page = FeedPage([feed_row(item)._replace(metadata=text)], "c", False, 1)
        assert _strict(changes_body(page))["changes"][0]["metadata"] == value


def test_changes_body_of_a_huge_integer_beside_nan() -> None:
    """Decoded metadata (NaN) with an integer orjson refuses: pydantic-core writes the page."""
    at = datetime(2026, 11, 26, 18, 27, 41, 123456, tzinfo=UTC)
    item = Item(
        "id",
        "user",
        "a.txt",
        1,
        "a" * 64,
        5,
        at,
        {"n": float("nan"), "big": 10**30},
        False,
        None,
        at,
        1,
        ChangeOp.UPSERT,
    )
    page = FeedPage([feed_row(item)], "c", False, 1)
    assert _strict(changes_body(page)) == _strict(_model_body([item], page))
