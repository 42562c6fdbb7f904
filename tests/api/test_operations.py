"""Health, readiness, metrics (protocol section 11) and the shape of every error."""

from __future__ import annotations

import uuid

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from shelfsync.server.services.auth import Principal
from tests.api.conftest import Account

PROBLEM = "application/problem+json"
PROBLEM_FIELDS = {"type", "title", "status", "detail", "code"}


def _assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert set(body) >= PROBLEM_FIELDS
    assert (body["status"], body["code"]) == (status, code)
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]


def _request_count(metrics: str, *, method: str, route: str, status: int) -> float:
    wanted = {"method": method, "route": route, "status": str(status)}
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "shelfsync_http_requests_total" and sample.labels == wanted:
                return float(sample.value)
    return 0.0


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_endpoints_answer_ok(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_metrics_are_prometheus_text(client: TestClient) -> None:
    client.get("/healthz")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "version=" in response.headers["content-type"]
    assert "# TYPE shelfsync_http_requests_total counter" in response.text
    assert _request_count(response.text, method="GET", route="/healthz", status=200) == 1


def test_metrics_label_requests_by_route_template_not_raw_path(
    client: TestClient, alice: Account
) -> None:
    created = client.post("/api/v1/sync/devices", json={"name": "laptop"}, headers=alice.headers)
    device_id = created.json()["device"]["id"]
    for _ in range(2):
        client.get(f"/api/v1/sync/devices/{device_id}", headers=alice.headers)
    client.get(f"/api/v1/sync/devices/{uuid.uuid4()}", headers=alice.headers)
    metrics = client.get("/metrics").text
    assert device_id not in metrics
    route = "/api/v1/sync/devices/{id}"
    assert _request_count(metrics, method="GET", route=route, status=200) == 2
    assert _request_count(metrics, method="GET", route=route, status=404) == 1


def test_metrics_keep_the_two_prefixes_apart(client: TestClient, alice: Account) -> None:
    device_id = client.post(
        "/api/sync/devices", json={"name": "laptop"}, headers=alice.headers
    ).json()["device"]["id"]
    client.get(f"/api/sync/devices/{device_id}", headers=alice.headers)
    metrics = client.get("/metrics").text
    assert _request_count(metrics, method="GET", route="/api/sync/devices/{id}", status=200) == 1
    assert _request_count(metrics, method="GET", route="/api/v1/sync/devices/{id}", status=200) == 0


def test_unmatched_paths_share_one_metrics_label(client: TestClient) -> None:
    for path in ("/nope", "/also/not/here", f"/{uuid.uuid4()}"):
        client.get(path)
    metrics = client.get("/metrics").text
    assert _request_count(metrics, method="GET", route="unmatched", status=404) == 3
    assert "/also/not/here" not in metrics


@pytest.mark.parametrize(
    "path", ["/nope", "/api/v1/sync/nothing", "/api/v1/auth/logout", "/api/v2/sync/devices"]
)
def test_unknown_route_is_404_problem(client: TestClient, path: str) -> None:
    _assert_problem(client.get(path), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        pytest.param("DELETE", "/healthz", "GET", id="delete-healthz"),
        pytest.param("GET", "/api/v1/auth/login", "POST", id="get-login"),
        pytest.param("PATCH", "/api/v1/sync/devices", "GET, POST", id="patch-devices"),
    ],
)
def test_wrong_method_is_405_problem_with_allow(
    client: TestClient, method: str, path: str, allowed: str
) -> None:
    response = client.request(method, path)
    _assert_problem(response, 405, "method_not_allowed")
    assert {m.strip() for m in response.headers["Allow"].split(",")} == set(allowed.split(", "))


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        pytest.param("GET", "/nowhere", None, 404, "not_found", id="404-route"),
        pytest.param("PUT", "/readyz", None, 405, "method_not_allowed", id="405"),
        pytest.param("POST", "/api/v1/auth/login", {}, 400, "invalid_request", id="400-body"),
        pytest.param(
            "POST",
            "/api/v1/auth/login",
            {"username": "nobody", "password": "wrong password"},
            401,
            "unauthorized",
            id="401-login",
        ),
        pytest.param(
            "POST",
            "/api/v1/auth/refresh",
            {"refresh_token": "x"},
            401,
            "unauthorized",
            id="401-refresh",
        ),
        pytest.param("GET", "/api/v1/sync/devices", None, 401, "unauthorized", id="401-bearer"),
    ],
)
def test_every_anonymous_error_is_a_problem_document(
    client: TestClient, method: str, path: str, body: object, status: int, code: str
) -> None:
    _assert_problem(client.request(method, path, json=body), status, code)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        pytest.param("GET", "/api/sync/devices/{other}", None, 403, "forbidden", id="403"),
        pytest.param("DELETE", "/api/v1/sync/devices/{unknown}", None, 404, "not_found", id="404"),
        pytest.param("PUT", "/api/v1/sync/devices/{own}", [], 400, "invalid_request", id="400"),
        pytest.param("GET", "/api/v1/sync/devices", None, 403, "forbidden", id="403-header"),
    ],
)
def test_every_authenticated_error_is_a_problem_document(
    app: FastAPI,
    client: TestClient,
    alice: Account,
    method: str,
    path: str,
    body: object,
    status: int,
    code: str,
) -> None:
    services = app.state.services
    owner = services.accounts.add_user(username="bob", password="bobs password")
    other, _ = services.devices.register(Principal(owner, None), name="bobs")
    own = client.post("/api/v1/sync/devices", json={"name": "mine"}, headers=alice.headers)
    url = path.format(other=other.device.id, own=own.json()["device"]["id"], unknown=uuid.uuid4())
    headers = alice.headers
    if path == "/api/v1/sync/devices":
        # Naming another user's device in X-Device-ID.
        headers = {**alice.headers, "X-Device-ID": other.device.id}
    _assert_problem(client.request(method, url, json=body, headers=headers), status, code)
