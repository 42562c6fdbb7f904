"""The six device endpoints (protocol section 5) at both prefixes, on both databases."""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shelfsync.server.domain.accounts import Device
from shelfsync.server.services.auth import Principal
from shelfsync.server.services.devices import DeviceStatus
from shelfsync.server.storage.engine import Database
from shelfsync.server.storage.tables import devices
from tests.api.conftest import Account

# Routing and storage are independent, so the two prefixes and the two
# databases are covered pairwise: each prefix once, each database once.
PREFIXES = pytest.mark.parametrize(
    ("database_url", "prefix"),
    [
        pytest.param("sqlite", "/api/sync", id="sqlite-/api/sync"),
        pytest.param("postgresql", "/api/v1/sync", id="postgresql-/api/v1/sync"),
    ],
    indirect=["database_url"],
)
PROBLEM = "application/problem+json"
DEVICE_FIELDS = {
    "id",
    "name",
    "device_type",
    "os",
    "client_version",
    "enabled",
    "created_at",
    "last_seen_at",
    "last_sync_at",
    "acked_cursor",
    "pending_changes",
    "sync_filter",
    "conflict_policy",
}
# RFC 3339, UTC, milliseconds (protocol section 1).
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["code"] == code


def _register(
    client: TestClient, account: Account, prefix: str = "/api/v1/sync", **fields: Any
) -> dict[str, Any]:
    response = client.post(
        f"{prefix}/devices", json={"name": "laptop", **fields}, headers=account.headers
    )
    assert response.status_code == 200, response.text
    registered: dict[str, Any] = response.json()
    return registered


def _device_login(client: TestClient, token: str) -> httpx.Response:
    return client.post("/api/v1/auth/device", json={"device_token": token})


@dataclass(frozen=True)
class OtherDevice:
    """Another user's device, made through the services (bob never logs in)."""

    owner: Principal
    id: str
    token: str

    def current(self, app: FastAPI) -> Device:
        status: DeviceStatus = app.state.services.devices.get(self.owner, self.id)
        return status.device


@pytest.fixture
def bobs_device(app: FastAPI) -> OtherDevice:
    services = app.state.services
    bob = Principal(services.accounts.add_user(username="bob", password="bobs password"), None)
    status, token = services.devices.register(bob, name="bobs phone")
    return OtherDevice(bob, status.device.id, token)


# -- register --------------------------------------------------------------


@PREFIXES
def test_register_returns_every_device_field_with_initial_values(
    client: TestClient, alice: Account, prefix: str
) -> None:
    before = datetime.now(UTC)
    response = client.post(f"{prefix}/devices", json={"name": "laptop"}, headers=alice.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"device", "token"}
    device = body["device"]
    assert set(device) == DEVICE_FIELDS
    assert uuid.UUID(device["id"])
    assert {k: v for k, v in device.items() if k not in ("id", "created_at")} == {
        "name": "laptop",
        "device_type": "other",
        "os": None,
        "client_version": None,
        "enabled": True,
        "last_seen_at": None,
        "last_sync_at": None,
        "acked_cursor": None,
        "pending_changes": 0,
        "sync_filter": {"include": [], "exclude": []},
        "conflict_policy": "manual",
    }
    assert TIMESTAMP.match(device["created_at"])
    created_at = datetime.fromisoformat(device["created_at"])
    assert before - timedelta(seconds=1) <= created_at <= datetime.now(UTC)
    assert isinstance(body["token"], str)
    assert len(body["token"]) >= 32


@PREFIXES
def test_register_keeps_every_optional_field_given(
    client: TestClient, alice: Account, prefix: str
) -> None:
    fields = {
        "device_type": "tablet",
        "os": "iPadOS 19",
        "client_version": "0.3.1",
        "sync_filter": {"include": ["books/**"], "exclude": ["*.tmp"]},
        "conflict_policy": "keep_both",
    }
    device = _register(client, alice, prefix, **fields)["device"]
    assert {k: device[k] for k in fields} == fields


def test_register_ignores_unknown_fields(client: TestClient, alice: Account) -> None:
    device = _register(client, alice, colour="teal")["device"]
    assert "colour" not in device
    assert device["name"] == "laptop"


def test_device_token_is_stored_only_as_its_sha256(
    client: TestClient, db: Database, alice: Account
) -> None:
    registered = _register(client, alice)
    with db.read() as conn:
        row = conn.execute(sa.select(devices)).mappings().one()
    assert row["token_hash"] == hashlib.sha256(registered["token"].encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", row["token_hash"])
    assert all(registered["token"] not in str(value) for value in row.values())


# -- list and get ----------------------------------------------------------


@PREFIXES
def test_list_shows_only_the_callers_devices_oldest_first(
    client: TestClient, alice: Account, bobs_device: OtherDevice, prefix: str
) -> None:
    ids = [_register(client, alice, name=name)["device"]["id"] for name in ("one", "two")]
    response = client.get(f"{prefix}/devices", headers=alice.headers)
    assert response.status_code == 200
    listed = response.json()["devices"]
    assert [d["id"] for d in listed] == ids
    assert all(set(d) == DEVICE_FIELDS for d in listed)


@PREFIXES
def test_get_returns_the_registered_device(client: TestClient, alice: Account, prefix: str) -> None:
    device = _register(client, alice)["device"]
    response = client.get(f"{prefix}/devices/{device['id']}", headers=alice.headers)
    assert response.status_code == 200
    assert response.json() == device


# -- update ----------------------------------------------------------------

EVERY_CHANGE = {
    "name": "renamed",
    "enabled": False,
    "os": "Linux 7",
    "client_version": "2.0.0",
    "sync_filter": {"include": ["music/**"], "exclude": []},
    "conflict_policy": "keep_both",
}


@PREFIXES
def test_put_changes_every_editable_field(client: TestClient, alice: Account, prefix: str) -> None:
    device = _register(client, alice)["device"]
    url = f"{prefix}/devices/{device['id']}"
    response = client.put(url, json=EVERY_CHANGE, headers=alice.headers)
    assert response.status_code == 200, response.text
    assert response.json() == {**device, **EVERY_CHANGE}
    assert client.get(url, headers=alice.headers).json() == {**device, **EVERY_CHANGE}


@pytest.mark.parametrize(
    "changes",
    [pytest.param({}, id="nothing")]
    + [pytest.param({field: value}, id=field) for field, value in EVERY_CHANGE.items()],
)
def test_put_with_a_subset_keeps_the_other_fields(
    client: TestClient, alice: Account, changes: dict[str, Any]
) -> None:
    device = _register(
        client,
        alice,
        device_type="desktop",
        os="Windows 12",
        client_version="1.0.0",
        sync_filter={"include": ["docs/**"], "exclude": ["*.bak"]},
    )["device"]
    url = f"/api/v1/sync/devices/{device['id']}"
    response = client.put(url, json=changes, headers=alice.headers)
    assert response.status_code == 200, response.text
    assert client.get(url, headers=alice.headers).json() == {**device, **changes}


def test_put_enabled_true_enables_a_disabled_device_again(
    client: TestClient, alice: Account
) -> None:
    registered = _register(client, alice)
    url = f"/api/v1/sync/devices/{registered['device']['id']}"
    client.put(url, json={"enabled": False}, headers=alice.headers)
    response = client.put(url, json={"enabled": True}, headers=alice.headers)
    assert response.json()["enabled"] is True
    assert _device_login(client, registered["token"]).status_code == 200


# -- invalid input ---------------------------------------------------------


BOTH_METHODS = ("POST", "PUT")


@pytest.mark.parametrize(
    ("content", "methods"),
    [
        pytest.param({"name": ""}, BOTH_METHODS, id="empty-name"),
        pytest.param({"name": "   "}, BOTH_METHODS, id="blank-name"),
        pytest.param({"name": "x" * 101}, BOTH_METHODS, id="name-too-long"),
        pytest.param({"name": "bad\x07bell"}, BOTH_METHODS, id="name-control-char"),
        pytest.param({"name": "a/b"}, BOTH_METHODS, id="name-slash"),
        # device_type is set at registration only; PUT ignores it like any unknown field.
        pytest.param({"name": "ok", "device_type": "toaster"}, ("POST",), id="unknown-type"),
        pytest.param({"conflict_policy": "last_wins"}, BOTH_METHODS, id="unknown-policy"),
        pytest.param({"sync_filter": ["*.txt"]}, BOTH_METHODS, id="sync-filter-a-list"),
        pytest.param({"sync_filter": {"include": "*.txt"}}, BOTH_METHODS, id="include-a-string"),
        pytest.param({"sync_filter": {"exclude": [""]}}, BOTH_METHODS, id="empty-glob"),
        pytest.param({"enabled": "maybe"}, ("PUT",), id="enabled-not-a-bool"),
        pytest.param(b'{"name": "laptop"', BOTH_METHODS, id="truncated-json"),
        pytest.param(b"name=laptop", BOTH_METHODS, id="not-json"),
        pytest.param(["laptop"], BOTH_METHODS, id="array-body"),
    ],
)
def test_invalid_device_input_is_400_and_changes_nothing(
    client: TestClient, alice: Account, content: object, methods: tuple[str, ...]
) -> None:
    registered = _register(client, alice, name="original")
    targets = {
        "POST": "/api/v1/sync/devices",
        "PUT": f"/api/v1/sync/devices/{registered['device']['id']}",
    }
    for method in methods:
        if isinstance(content, bytes):
            headers = {**alice.headers, "content-type": "application/json"}
            response = client.request(method, targets[method], content=content, headers=headers)
        else:
            body = {"name": "ok", **content} if isinstance(content, dict) else content
            response = client.request(method, targets[method], json=body, headers=alice.headers)
        _assert_problem(response, 400, "invalid_request")
    listed = client.get("/api/v1/sync/devices", headers=alice.headers).json()["devices"]
    assert listed == [registered["device"]]


# -- ownership -------------------------------------------------------------

OTHER_DEVICE_CALLS = [
    pytest.param("GET", "", id="get"),
    pytest.param("PUT", "", id="put"),
    pytest.param("DELETE", "", id="delete"),
    pytest.param("POST", "/token", id="rotate"),
]


def _call(client: TestClient, account: Account, method: str, url: str) -> httpx.Response:
    body = {"name": "hijacked", "enabled": False} if method == "PUT" else None
    return client.request(method, url, json=body, headers=account.headers)


@PREFIXES
@pytest.mark.parametrize(("method", "suffix"), OTHER_DEVICE_CALLS)
def test_another_users_device_is_403_and_left_alone(
    app: FastAPI,
    client: TestClient,
    alice: Account,
    bobs_device: OtherDevice,
    prefix: str,
    method: str,
    suffix: str,
) -> None:
    before = bobs_device.current(app)
    response = _call(client, alice, method, f"{prefix}/devices/{bobs_device.id}{suffix}")
    _assert_problem(response, 403, "forbidden")
    assert bobs_device.current(app) == before
    assert _device_login(client, bobs_device.token).status_code == 200


@PREFIXES
@pytest.mark.parametrize(("method", "suffix"), OTHER_DEVICE_CALLS)
def test_unknown_device_is_404(
    client: TestClient, alice: Account, prefix: str, method: str, suffix: str
) -> None:
    response = _call(client, alice, method, f"{prefix}/devices/{uuid.uuid4()}{suffix}")
    _assert_problem(response, 404, "not_found")


# -- delete ----------------------------------------------------------------


@PREFIXES
def test_deleted_device_is_204_then_gone(client: TestClient, alice: Account, prefix: str) -> None:
    device_id = _register(client, alice)["device"]["id"]
    url = f"{prefix}/devices/{device_id}"
    response = client.delete(url, headers=alice.headers)
    assert response.status_code == 204
    assert response.content == b""
    _assert_problem(client.get(url, headers=alice.headers), 404, "not_found")
    _assert_problem(client.delete(url, headers=alice.headers), 404, "not_found")
    assert client.get(f"{prefix}/devices", headers=alice.headers).json() == {"devices": []}


def test_deleted_device_token_can_no_longer_be_exchanged(
    client: TestClient, alice: Account
) -> None:
    registered = _register(client, alice)
    client.delete(f"/api/v1/sync/devices/{registered['device']['id']}", headers=alice.headers)
    _assert_problem(_device_login(client, registered["token"]), 401, "unauthorized")


# -- token rotation --------------------------------------------------------


@PREFIXES
def test_rotation_returns_a_new_token_and_the_old_one_stops_working(
    client: TestClient, alice: Account, prefix: str
) -> None:
    registered = _register(client, alice)
    device_id = registered["device"]["id"]
    response = client.post(f"{prefix}/devices/{device_id}/token", headers=alice.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"device_id", "token"}
    assert body["device_id"] == device_id
    assert body["token"] != registered["token"]
    _assert_problem(_device_login(client, registered["token"]), 401, "unauthorized")
    exchanged = _device_login(client, body["token"])
    assert exchanged.status_code == 200, exchanged.text
    assert exchanged.json()["device_id"] == device_id
