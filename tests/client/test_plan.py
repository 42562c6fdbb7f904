"""plan.py: the three-way table, and properties over random histories (hypothesis)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shelfsync.client.plan import (
    Base,
    ConflictMark,
    DeleteLocal,
    Download,
    ForgetConflict,
    ForgetSynced,
    MarkSynced,
    MoveLocal,
    PlanInput,
    RelocateSynced,
    RemoteItem,
    ReportDelete,
    ReportMove,
    ReportUpsert,
    plan,
)
from tests.client.plan_model import ModelDevice, ModelServer, converge

PATHS = ["a", "b", "c", "d/x", "d/y"]
HASHES = ["h1", "h2", "h3", "h4"]

B = Base("i1", 3, "h1")
R_SAME = RemoteItem("i1", "a", 3, "h1")
R_EDIT = RemoteItem("i1", "a", 4, "h2")


def one(**kwargs: object) -> list[object]:
    defaults: dict[str, object] = {"synced": {}, "local": {}, "remote": {}}
    defaults.update(kwargs)
    return list(plan(PlanInput(**defaults)))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("synced", "local", "remote", "expected"),
    [
        pytest.param({"a": B}, {"a": "h1"}, {"a": R_SAME}, [], id="all-agree"),
        pytest.param(
            {"a": B},
            {"a": "h1"},
            {"a": R_EDIT},
            [Download("a", "i1", 4, "h2", "h1")],
            id="remote-edit",
        ),
        pytest.param({"a": B}, {"a": "h1"}, {}, [DeleteLocal("a", "h1")], id="remote-delete"),
        pytest.param(
            {"a": B}, {"a": "h3"}, {"a": R_SAME}, [ReportUpsert("a", "h3", 3)], id="local-edit"
        ),
        pytest.param({"a": B}, {}, {"a": R_SAME}, [ReportDelete("a", 3)], id="local-delete"),
        pytest.param({}, {"a": "h1"}, {}, [ReportUpsert("a", "h1", None)], id="local-create"),
        pytest.param(
            {}, {}, {"a": R_SAME}, [Download("a", "i1", 3, "h1", None)], id="remote-create"
        ),
        pytest.param(
            {"a": B}, {"a": "h3"}, {"a": R_EDIT}, [ReportUpsert("a", "h3", 3)], id="both-edit"
        ),
        pytest.param(
            {"a": B}, {"a": "h2"}, {"a": R_EDIT}, [MarkSynced("a", "i1", 4, "h2")], id="same-edit"
        ),
        pytest.param({"a": B}, {}, {}, [ForgetSynced("a")], id="both-delete"),
        pytest.param(
            {"a": B}, {}, {"a": R_EDIT}, [ReportDelete("a", 3)], id="delete-over-remote-edit"
        ),
        pytest.param(
            {"a": B}, {"a": "h3"}, {}, [ReportUpsert("a", "h3", 3)], id="edit-over-remote-delete"
        ),
        pytest.param(
            {"a": B},
            {"a": "h3"},
            {"a": RemoteItem("i1", "a", 5, "h1")},
            [ReportUpsert("a", "h3", 5)],
            id="local-edit-after-remote-metadata-change",
        ),
    ],
)
def test_three_way_table(
    synced: dict[str, Base],
    local: dict[str, str],
    remote: dict[str, RemoteItem],
    expected: list[object],
) -> None:
    assert one(synced=synced, local=local, remote=remote) == expected


def test_clean_local_move_is_reported_as_move_based_on_remote_revision() -> None:
    actions = one(
        synced={"a": B},
        local={"c": "h1"},
        remote={"a": R_EDIT},
        local_moves=[("a", "c")],
    )
    assert actions == [ReportMove("a", "c", 4, "i1")]


def test_clean_remote_move_renames_locally_and_carries_a_local_edit() -> None:
    actions = one(synced={"a": B}, local={"a": "h9"}, remote={"b": RemoteItem("i1", "b", 4, "h1")})
    assert actions == [MoveLocal("a", "b", "a", "h9")]


def test_same_move_on_both_sides_relocates_the_record() -> None:
    actions = one(
        synced={"a": B},
        local={"c": "h1"},
        remote={"c": RemoteItem("i1", "c", 4, "h1")},
        local_moves=[("a", "c")],
    )
    assert actions == [RelocateSynced("a", "c")]


def test_local_delete_follows_a_remote_move() -> None:
    actions = one(synced={"a": B}, local={}, remote={"b": RemoteItem("i1", "b", 4, "h1")})
    assert actions == [ReportDelete("b", 4), ForgetSynced("a")]


def test_unresolved_conflict_leaves_the_local_file_alone() -> None:
    actions = one(
        synced={"a": B},
        local={"a": "h3"},
        remote={"a": R_EDIT},
        conflicts={"a": ConflictMark("h3", resolved=False)},
    )
    assert actions == []


def test_resolved_conflict_takes_the_server_version() -> None:
    actions = one(
        synced={"a": B},
        local={"a": "h3"},
        remote={"a": R_EDIT},
        conflicts={"a": ConflictMark("h3", resolved=True)},
    )
    assert actions == [Download("a", "i1", 4, "h2", "h3")]


def test_a_new_local_edit_after_a_conflict_is_reported_again() -> None:
    actions = one(
        synced={"a": B},
        local={"a": "h4"},
        remote={"a": R_EDIT},
        conflicts={"a": ConflictMark("h3", resolved=False)},
    )
    assert actions == [ReportUpsert("a", "h4", 3), ForgetConflict("a")]


def test_skipped_paths_are_left_alone() -> None:
    assert one(synced={"a": B}, local={}, remote={"a": R_SAME}, skip=frozenset({"a"})) == []


# -- properties -----------------------------------------------------------------


@dataclass
class Scenario:
    device: ModelDevice
    server: ModelServer
    moves: list[tuple[str, str]]
    modified: list[str]  # content hashes the device changed locally


@st.composite
def scenarios(draw: st.DrawFn, *, keep_both: bool | None = None) -> Scenario:
    initial = draw(st.dictionaries(st.sampled_from(PATHS), st.sampled_from(HASHES), max_size=4))
    server = ModelServer(keep_both=draw(st.booleans()) if keep_both is None else keep_both)
    synced: dict[str, Base] = {}
    for path, content in sorted(initial.items()):
        item = server._write(None, path, content)
        synced[path] = Base(item.id, item.revision, content)
    local = dict(initial)
    moves: list[tuple[str, str]] = []
    modified: list[str] = []
    for path in sorted(initial):
        op = draw(st.sampled_from(["keep", "edit", "delete", "move", "move-edit"]))
        if op == "edit":
            local[path] = draw(st.sampled_from([h for h in HASHES if h != local[path]]))
            modified.append(local[path])
        elif op == "delete":
            del local[path]
        elif op.startswith("move"):
            free = [p for p in PATHS if p not in local and p not in synced]
            if free:
                target = draw(st.sampled_from(free))
                local[target] = local.pop(path)
                if op == "move-edit":
                    local[target] = draw(st.sampled_from([h for h in HASHES if h != local[target]]))
                    modified.append(local[target])
                moves.append((path, target))
    for path in draw(st.lists(st.sampled_from(PATHS), max_size=2, unique=True)):
        if path not in local:
            local[path] = draw(st.sampled_from(HASHES))
            if path not in synced or synced[path].content_hash != local[path]:
                modified.append(local[path])  # (re-creating what was synced changes nothing)
    # Another device's changes, already accepted by the server.
    for item in sorted(server.items.values(), key=lambda i: i.id):
        op = draw(st.sampled_from(["keep", "keep", "edit", "delete", "move"]))
        current = server.items[item.id]
        if op == "edit":
            server._write(current, current.path, draw(st.sampled_from(HASHES)))
        elif op == "delete":
            server._write(current, current.path, None)
        elif op == "move":
            free = [p for p in PATHS if server.at_path(p) is None or p not in server.live()]
            free = [p for p in free if p not in server.live()]
            if free:
                server._write(current, draw(st.sampled_from(free)), current.content_hash)
    for path in draw(st.lists(st.sampled_from(PATHS), max_size=2, unique=True)):
        if path not in server.live():
            server._write(server.at_path(path), path, draw(st.sampled_from(HASHES)))
    return Scenario(ModelDevice(local, synced), server, moves, modified)


SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(scenarios(keep_both=True))
def test_sync_converges_to_the_server_state(scenario: Scenario) -> None:
    converge(scenario.device, scenario.server, scenario.moves)
    live = scenario.server.live()
    assert scenario.device.local == {p: i.content_hash for p, i in live.items()}
    assert {p: b.content_hash for p, b in scenario.device.synced.items()} == scenario.device.local
    assert {p: b.item_id for p, b in scenario.device.synced.items()} == {
        p: i.item_id for p, i in live.items()
    }


@SETTINGS
@given(scenarios())
def test_no_local_modification_is_ever_dropped(scenario: Scenario) -> None:
    converge(scenario.device, scenario.server, scenario.moves)
    kept = (
        set(scenario.device.local.values())
        | {i.content_hash for i in scenario.server.live().values()}
        | {content for _, content in scenario.server.conflict_versions}
    )
    for content in scenario.modified:
        assert content in kept


@SETTINGS
@given(scenarios(keep_both=True))
def test_every_local_modification_reaches_the_library_under_keep_both(scenario: Scenario) -> None:
    converge(scenario.device, scenario.server, scenario.moves)
    library = {i.content_hash for i in scenario.server.live().values()}
    assert set(scenario.modified) <= library


@SETTINGS
@given(scenarios(keep_both=False))
def test_manual_conflicts_leave_the_local_file_untouched(scenario: Scenario) -> None:
    before = dict(scenario.device.local)
    converge(scenario.device, scenario.server, scenario.moves)
    for path, mark in scenario.device.conflicts.items():
        assert not mark.resolved
        assert scenario.device.local.get(path) == mark.local_hash == before.get(path)


@SETTINGS
@given(scenarios())
def test_applying_a_plan_twice_changes_nothing_the_second_time(scenario: Scenario) -> None:
    device, server = scenario.device, scenario.server
    actions = plan(device.plan_input(server, scenario.moves))
    device.apply(actions, server)
    after_once = (device.snapshot(), copy.deepcopy(server.items))
    device.apply(actions, server)
    assert (device.snapshot(), server.items) == after_once


@SETTINGS
@given(scenarios())
def test_a_settled_state_plans_nothing(scenario: Scenario) -> None:
    converge(scenario.device, scenario.server, scenario.moves)
    assert plan(scenario.device.plan_input(scenario.server, [])) == []
