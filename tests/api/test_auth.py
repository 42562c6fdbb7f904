"""Authentication over HTTP (protocol section 2), on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from jwt.warnings import InsecureKeyLengthWarning

from shelfsync.server.app import create_app
from shelfsync.server.domain.clock import utcnow
from shelfsync.server.settings import Settings
from shelfsync.server.storage.engine import Database
from shelfsync.server.storage.users import UserRepository
from tests.api.conftest import FAST_HASHING, PASSWORD, Account

LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
DEVICE_AUTH = "/api/v1/auth/device"
DEVICES = "/api/v1/sync/devices"
PROBLEM = "application/problem+json"
MAX_FAILURES = 3


def _secret(settings: Settings) -> bytes:
    return bytes.fromhex(settings.secret_path.read_text().strip())


def _claims(token: str, settings: Settings) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, _secret(settings), algorithms=["HS256"])
    return claims


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    return body


def _login(client: TestClient, username: str, password: str) -> httpx.Response:
    return client.post(LOGIN, json={"username": username, "password": password})


def _register_device(client: TestClient, account: Account, name: str = "laptop") -> dict[str, Any]:
    response = client.post(DEVICES, json={"name": name}, headers=account.headers)
    assert response.status_code == 200, response.text
    registered: dict[str, Any] = response.json()
    return registered


def _device_access(client: TestClient, device_token: str) -> httpx.Response:
    return client.post(DEVICE_AUTH, json={"device_token": device_token})


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- login -----------------------------------------------------------------


def test_login_returns_a_bearer_token_pair_with_its_expiry(
    client: TestClient, settings: Settings, alice: Account
) -> None:
    response = _login(client, "alice", PASSWORD)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == settings.access_token_ttl_s
    claims = _claims(body["access_token"], settings)
    assert claims["exp"] - claims["iat"] == body["expires_in"]
    assert body["access_token"] != body["refresh_token"]


def test_login_access_token_authorizes_requests(client: TestClient, alice: Account) -> None:
    # `alice` logged in over HTTP; her access token is the one login returned.
    assert client.get(DEVICES, headers=alice.headers).status_code == 200


def test_wrong_password_and_unknown_user_get_the_same_401(
    client: TestClient, alice: Account
) -> None:
    wrong_password = _login(client, "alice", "not the password")
    unknown_user = _login(client, "mallory", "not the password")
    _assert_problem(wrong_password, 401, "unauthorized")
    assert unknown_user.status_code == wrong_password.status_code
    assert unknown_user.json() == wrong_password.json()
    assert unknown_user.headers["content-type"] == wrong_password.headers["content-type"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"username": "alice"}, "body.password", id="missing-password"),
        pytest.param({"password": PASSWORD}, "body.username", id="missing-username"),
        pytest.param({"username": "", "password": PASSWORD}, "body.username", id="empty-username"),
        pytest.param({"username": "alice", "password": ""}, "body.password", id="empty-password"),
        pytest.param({"username": 5, "password": PASSWORD}, "body.username", id="username-number"),
        pytest.param({"username": "alice", "password": None}, "body.password", id="password-null"),
        pytest.param([], "body", id="array-body"),
    ],
)
def test_invalid_login_body_is_400_naming_the_field(
    client: TestClient, body: object, field: str
) -> None:
    problem = _assert_problem(client.post(LOGIN, json=body), 400, "invalid_request")
    assert field in [error["field"] for error in problem["errors"]]


@pytest.mark.parametrize(
    ("path", "content", "content_type"),
    [
        pytest.param(LOGIN, b'{"username": "alice", ', "application/json", id="truncated"),
        pytest.param(LOGIN, b"{'username': 'alice'}", "application/json", id="single-quotes"),
        pytest.param(LOGIN, b"", "application/json", id="empty"),
        pytest.param(
            LOGIN, b"username=alice&password=x", "application/x-www-form-urlencoded", id="form"
        ),
        pytest.param(LOGIN, b"alice:password", "text/plain", id="text"),
        pytest.param(REFRESH, b'{"refresh_token": ', "application/json", id="refresh-truncated"),
        pytest.param(DEVICE_AUTH, b"token", "text/plain", id="device-text"),
    ],
)
def test_malformed_auth_body_is_400_invalid_request(
    client: TestClient, path: str, content: bytes, content_type: str
) -> None:
    response = client.post(path, content=content, headers={"content-type": content_type})
    _assert_problem(response, 400, "invalid_request")


# -- throttling ------------------------------------------------------------


@pytest.fixture
def strict_app(tmp_path: Path, database_url: str, db: Database) -> FastAPI:
    settings = Settings(
        data_dir=tmp_path / "strict",
        database_url=database_url,
        login_max_failures=MAX_FAILURES,
        **FAST_HASHING,
    )
    app = create_app(settings, db=db)
    app.state.services.accounts.add_user(username="alice", password=PASSWORD)
    return app


@pytest.fixture
def strict_client(strict_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(strict_app) as test_client:
        yield test_client


def test_login_is_429_with_retry_after_once_failures_reach_the_limit(
    strict_app: FastAPI, strict_client: TestClient
) -> None:
    for _ in range(MAX_FAILURES):
        _assert_problem(_login(strict_client, "alice", "wrong password"), 401, "unauthorized")
    response = _login(strict_client, "alice", "wrong password")
    _assert_problem(response, 429, "too_many_attempts")
    retry_after = int(response.headers["Retry-After"])
    assert 0 < retry_after <= strict_app.state.settings.login_block_s


def test_blocked_user_is_refused_even_with_the_right_password(strict_client: TestClient) -> None:
    for _ in range(MAX_FAILURES):
        _login(strict_client, "alice", "wrong password")
    _assert_problem(_login(strict_client, "alice", PASSWORD), 429, "too_many_attempts")


def test_unknown_user_is_throttled_like_a_known_one(strict_client: TestClient) -> None:
    for _ in range(MAX_FAILURES):
        _assert_problem(_login(strict_client, "mallory", "wrong password"), 401, "unauthorized")
    _assert_problem(_login(strict_client, "mallory", "wrong password"), 429, "too_many_attempts")


def test_successful_login_resets_the_failure_count(strict_client: TestClient) -> None:
    for _ in range(MAX_FAILURES - 1):
        _login(strict_client, "alice", "wrong password")
    assert _login(strict_client, "alice", PASSWORD).status_code == 200
    # Without the reset, the next failure would reach the limit and block.
    for _ in range(MAX_FAILURES - 1):
        _assert_problem(_login(strict_client, "alice", "wrong password"), 401, "unauthorized")
    assert _login(strict_client, "alice", PASSWORD).status_code == 200


# -- refresh ---------------------------------------------------------------


def test_refresh_rotates_to_a_new_working_token_pair(
    client: TestClient, settings: Settings, alice: Account
) -> None:
    response = client.post(REFRESH, json={"refresh_token": alice.refresh_token})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == settings.access_token_ttl_s
    assert body["refresh_token"] != alice.refresh_token
    assert client.get(DEVICES, headers=_bearer(body["access_token"])).status_code == 200
    again = client.post(REFRESH, json={"refresh_token": body["refresh_token"]})
    assert again.status_code == 200, again.text


def test_reused_refresh_token_is_401_and_revokes_the_whole_chain(
    client: TestClient, alice: Account
) -> None:
    newest = client.post(REFRESH, json={"refresh_token": alice.refresh_token}).json()
    reuse = client.post(REFRESH, json={"refresh_token": alice.refresh_token})
    _assert_problem(reuse, 401, "unauthorized")
    after = client.post(REFRESH, json={"refresh_token": newest["refresh_token"]})
    _assert_problem(after, 401, "unauthorized")


def test_reuse_leaves_other_sessions_of_the_user_alone(client: TestClient, alice: Account) -> None:
    other_session = _login(client, "alice", PASSWORD).json()
    client.post(REFRESH, json={"refresh_token": alice.refresh_token})
    client.post(REFRESH, json={"refresh_token": alice.refresh_token})
    response = client.post(REFRESH, json={"refresh_token": other_session["refresh_token"]})
    assert response.status_code == 200, response.text


def test_expired_refresh_token_is_401(tmp_path: Path, database_url: str, db: Database) -> None:
    # A lifetime of zero: the token has expired by the time it is presented.
    settings = Settings(
        data_dir=tmp_path / "short", database_url=database_url, refresh_token_ttl_s=0
    )
    app = create_app(settings, db=db)
    app.state.services.accounts.add_user(username="alice", password=PASSWORD)
    with TestClient(app) as client:
        refresh_token = _login(client, "alice", PASSWORD).json()["refresh_token"]
        response = client.post(REFRESH, json={"refresh_token": refresh_token})
    _assert_problem(response, 401, "unauthorized")


def test_unknown_refresh_token_is_401(client: TestClient) -> None:
    response = client.post(REFRESH, json={"refresh_token": "ssr_made-up"})
    _assert_problem(response, 401, "unauthorized")


# -- device token exchange -------------------------------------------------


def test_device_token_exchange_returns_a_device_bound_access_token(
    client: TestClient, settings: Settings, alice: Account
) -> None:
    registered = _register_device(client, alice)
    device_id = registered["device"]["id"]
    response = _device_access(client, registered["token"])
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "device_id"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == settings.access_token_ttl_s
    assert body["device_id"] == device_id
    assert _claims(body["access_token"], settings)["did"] == device_id
    assert client.get(DEVICES, headers=_bearer(body["access_token"])).status_code == 200


def test_unknown_device_token_is_401(client: TestClient, alice: Account) -> None:
    _register_device(client, alice)
    _assert_problem(_device_access(client, "ssd_made-up"), 401, "unauthorized")


def test_disabled_device_cannot_exchange_its_token(client: TestClient, alice: Account) -> None:
    registered = _register_device(client, alice)
    client.put(
        f"{DEVICES}/{registered['device']['id']}", json={"enabled": False}, headers=alice.headers
    )
    _assert_problem(_device_access(client, registered["token"]), 401, "unauthorized")


# -- access token rejection ------------------------------------------------


@pytest.fixture
def good_claims(app: FastAPI, db: Database) -> dict[str, Any]:
    """Claims of a valid access token for a user who never logs in (no password work).

    The tokens of the table below are forged from these with the server's
    secret; the control test shows the unaltered claims are accepted.
    """
    with db.write() as conn:
        user = UserRepository(conn).add(
            user_id=str(uuid.uuid4()), username="carol", password_hash="unused", now=utcnow()
        )
    now = int(time.time())
    return {"sub": user.id, "typ": "access", "ugen": user.generation, "iat": now, "exp": now + 60}


Forge = Callable[[dict[str, Any], bytes], dict[str, str]]


def _forged(claims: dict[str, Any], secret: bytes, algorithm: str = "HS256") -> dict[str, str]:
    return _bearer(jwt.encode(claims, secret, algorithm=algorithm))


def _alg_none(claims: dict[str, Any], secret: bytes) -> dict[str, str]:
    return _bearer(jwt.encode(claims, None, algorithm="none"))


def _hs512(claims: dict[str, Any], secret: bytes) -> dict[str, str]:
    with warnings.catch_warnings():
        # PyJWT warns that 32 bytes are short for SHA-512; the server's key is what it is.
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return _forged(claims, secret, "HS512")


def _rs256_header(claims: dict[str, Any], secret: bytes) -> dict[str, str]:
    # The key-confusion shape: an asymmetric algorithm named, an HMAC made with
    # the server's secret (as if it were the public key).
    signing_input = (
        _b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
        + "."
        + _b64(json.dumps(claims).encode())
    )
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return _bearer(f"{signing_input}.{_b64(signature)}")


def _bad_signature(claims: dict[str, Any], secret: bytes) -> dict[str, str]:
    return _forged(claims, b"not the server's secret, 32+ bytes")


def _expired(claims: dict[str, Any], secret: bytes) -> dict[str, str]:
    now = int(time.time())
    return _forged({**claims, "iat": now - 120, "exp": now - 60}, secret)


def _refresh_typ(claims: dict[str, Any], secret: bytes) -> dict[str, str]:
    return _forged({**claims, "typ": "refresh"}, secret)


def _no_typ(claims: dict[str, Any], secret: bytes) -> dict[str, str]:
    return _forged({k: v for k, v in claims.items() if k != "typ"}, secret)


def _no_exp(claims: dict[str, Any], secret: bytes) -> dict[str, str]:
    return _forged({k: v for k, v in claims.items() if k != "exp"}, secret)


def _stale_generation(claims: dict[str, Any], secret: bytes) -> dict[str, str]:
    return _forged({**claims, "ugen": claims["ugen"] - 1}, secret)


def _unknown_user(claims: dict[str, Any], secret: bytes) -> dict[str, str]:
    return _forged({**claims, "sub": str(uuid.uuid4())}, secret)


def _unknown_device(claims: dict[str, Any], secret: bytes) -> dict[str, str]:
    return _forged({**claims, "did": str(uuid.uuid4()), "dgen": 1}, secret)


def _garbage(claims: dict[str, Any], secret: bytes) -> dict[str, str]:
    return _bearer("garbage.not-a.jwt")


def _missing_header(claims: dict[str, Any], secret: bytes) -> dict[str, str]:
    return {}


def _empty_bearer(claims: dict[str, Any], secret: bytes) -> dict[str, str]:
    return {"Authorization": "Bearer "}


def _basic_scheme(claims: dict[str, Any], secret: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"carol:{PASSWORD}".encode()).decode()}


def _token_scheme(claims: dict[str, Any], secret: bytes) -> dict[str, str]:
    # A valid token under another scheme name.
    return {"Authorization": "Token " + jwt.encode(claims, secret, algorithm="HS256")}


REJECTED: list[Any] = [
    pytest.param(_alg_none, id="alg-none"),
    pytest.param(_hs512, id="hs512-right-secret"),
    pytest.param(_rs256_header, id="rs256-header"),
    pytest.param(_bad_signature, id="bad-signature"),
    pytest.param(_expired, id="expired"),
    pytest.param(_refresh_typ, id="typ-refresh"),
    pytest.param(_no_typ, id="no-typ"),
    pytest.param(_no_exp, id="no-exp"),
    pytest.param(_stale_generation, id="stale-user-generation"),
    pytest.param(_unknown_user, id="unknown-user"),
    pytest.param(_unknown_device, id="unknown-device"),
    pytest.param(_garbage, id="garbage"),
    pytest.param(_missing_header, id="missing-header"),
    pytest.param(_empty_bearer, id="empty-bearer"),
    pytest.param(_basic_scheme, id="basic-scheme"),
    pytest.param(_token_scheme, id="token-scheme"),
]


def test_token_forged_like_the_server_is_accepted(
    client: TestClient, settings: Settings, good_claims: dict[str, Any]
) -> None:
    # The control for the table below: each rejected variant differs from this
    # one only in what its name says.
    headers = _forged(good_claims, _secret(settings))
    assert client.get(DEVICES, headers=headers).status_code == 200


@pytest.mark.parametrize("forge", REJECTED)
def test_bad_access_token_is_401_unauthorized(
    client: TestClient, settings: Settings, good_claims: dict[str, Any], forge: Forge
) -> None:
    response = client.get(DEVICES, headers=forge(good_claims, _secret(settings)))
    problem = _assert_problem(response, 401, "unauthorized")
    assert {"type", "title", "status", "detail", "code"} <= set(problem)
    # RFC 6750 section 3: a 401 names the scheme the client should use.
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_refresh_token_used_as_bearer_is_401(client: TestClient, alice: Account) -> None:
    _assert_problem(client.get(DEVICES, headers=_bearer(alice.refresh_token)), 401, "unauthorized")


def test_device_token_used_as_bearer_is_401(client: TestClient, alice: Account) -> None:
    registered = _register_device(client, alice)
    response = client.get(DEVICES, headers=_bearer(registered["token"]))
    _assert_problem(response, 401, "unauthorized")


# -- revocation ------------------------------------------------------------


def test_password_change_ends_old_access_and_refresh_tokens(
    app: FastAPI, client: TestClient, alice: Account
) -> None:
    app.state.services.accounts.set_password(username="alice", password="a new passphrase")
    _assert_problem(client.get(DEVICES, headers=alice.headers), 401, "unauthorized")
    response = client.post(REFRESH, json={"refresh_token": alice.refresh_token})
    _assert_problem(response, 401, "unauthorized")


def test_password_change_ends_device_bound_access_tokens(
    app: FastAPI, client: TestClient, alice: Account
) -> None:
    registered = _register_device(client, alice)
    device_access = _device_access(client, registered["token"]).json()["access_token"]
    app.state.services.accounts.set_password(username="alice", password="a new passphrase")
    _assert_problem(client.get(DEVICES, headers=_bearer(device_access)), 401, "unauthorized")


def test_new_password_logs_in_and_old_one_does_not(
    app: FastAPI, client: TestClient, alice: Account
) -> None:
    app.state.services.accounts.set_password(username="alice", password="a new passphrase")
    assert _login(client, "alice", "a new passphrase").status_code == 200
    _assert_problem(_login(client, "alice", PASSWORD), 401, "unauthorized")


def _delete(client: TestClient, account: Account, device_id: str) -> None:
    response = client.delete(f"{DEVICES}/{device_id}", headers=account.headers)
    assert response.status_code == 204, response.text


def _disable(client: TestClient, account: Account, device_id: str) -> None:
    response = client.put(
        f"{DEVICES}/{device_id}", json={"enabled": False}, headers=account.headers
    )
    assert response.status_code == 200, response.text


def _rotate(client: TestClient, account: Account, device_id: str) -> None:
    response = client.post(f"{DEVICES}/{device_id}/token", headers=account.headers)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "revoke",
    [
        pytest.param(_delete, id="deleted"),
        pytest.param(_disable, id="disabled"),
        pytest.param(_rotate, id="token-rotated"),
    ],
)
def test_device_bound_token_stops_working_at_once(
    client: TestClient, alice: Account, revoke: Callable[[TestClient, Account, str], None]
) -> None:
    registered = _register_device(client, alice)
    device_access = _device_access(client, registered["token"]).json()["access_token"]
    assert client.get(DEVICES, headers=_bearer(device_access)).status_code == 200
    revoke(client, alice, registered["device"]["id"])
    _assert_problem(client.get(DEVICES, headers=_bearer(device_access)), 401, "unauthorized")


def test_revoking_one_device_leaves_another_devices_token_working(
    client: TestClient, alice: Account
) -> None:
    first, second = _register_device(client, alice, "one"), _register_device(client, alice, "two")
    second_access = _device_access(client, second["token"]).json()["access_token"]
    _rotate(client, alice, first["device"]["id"])
    assert client.get(DEVICES, headers=_bearer(second_access)).status_code == 200


# -- X-Device-ID -----------------------------------------------------------


def test_user_token_may_act_for_own_device(client: TestClient, alice: Account) -> None:
    device_id = _register_device(client, alice)["device"]["id"]
    response = client.get(DEVICES, headers={**alice.headers, "X-Device-ID": device_id})
    assert response.status_code == 200, response.text


def test_user_token_naming_another_users_device_is_403(
    client: TestClient, alice: Account, bob: Account
) -> None:
    bobs_device = _register_device(client, bob)["device"]["id"]
    response = client.get(DEVICES, headers={**alice.headers, "X-Device-ID": bobs_device})
    _assert_problem(response, 403, "forbidden")
