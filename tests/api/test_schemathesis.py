"""Property-based API conformance: schemathesis against the app's own /openapi.json.

Every operation gets a few generated requests (valid and invalid), sent
in-process with a real device-bound token (a user token on the user-level
device routes). Each answer must be no 500, a documented status code, the
documented content type, headers and body schema. Bounded and derandomized
so it stays quick and stable.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode, checks
from schemathesis.specs.openapi import checks as openapi_checks

from shelfsync.server.app import create_app
from shelfsync.server.settings import Settings
from shelfsync.server.storage.engine import Database
from tests.api.conftest import FAST_HASHING
from tests.api.sync_support import SyncDriver

# A batch body is framed binary (protocol section 11.4), generated like any
# binary body: arbitrary bytes, which the server must answer with a 4xx.
schemathesis.serializer.alias("application/vnd.shelfsync.batch", "application/octet-stream")

CHECKS = [
    checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_headers_conformance,
    openapi_checks.response_schema_conformance,
]


class Live:
    def __init__(self, app: FastAPI, user_headers: dict[str, str], device_headers: dict[str, str]):
        self.app = app
        self.user_headers = user_headers
        self.device_headers = device_headers


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("schemathesis")
    shutil.copyfile(sqlite_template, root / "shelfsync.db")
    url = f"sqlite:///{root / 'shelfsync.db'}"
    db = Database(url)
    app = create_app(Settings(data_dir=root / "data", database_url=url, **FAST_HASHING), db=db)
    try:
        with TestClient(app) as client:
            sync = SyncDriver(app, client)
            user = sync.user("alice")
            device = user.device("laptop")
            yield Live(app, user.headers, device.headers)
    finally:
        db.dispose()


@pytest.fixture(scope="module")
def api_schema(live: Live) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", live.app)


# schemathesis's own pytest integration (`from_fixture`) does not run on
# pytest 9, so each operation is a parametrized test driving its strategy.
_DOCUMENTED = json.loads((Path(__file__).parents[2] / "docs/api/openapi.json").read_text())
OPERATIONS = [
    (method.upper(), path, mode)
    for path, item in sorted(_DOCUMENTED["paths"].items())
    for method, operation in item.items()
    if method in {"get", "head", "post", "put", "patch", "delete"}
    for mode in GenerationMode
    # Invalid requests need something to make invalid: a parameter or a body.
    if mode is GenerationMode.POSITIVE or operation.get("parameters") or "requestBody" in operation
]


@pytest.mark.parametrize(
    ("method", "path", "mode"), OPERATIONS, ids=[f"{m} {p} {g.value}" for m, p, g in OPERATIONS]
)
def test_every_operation_answers_as_documented(
    api_schema: Any, live: Live, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]
    if path.startswith("/api/v1/auth/"):
        headers: dict[str, str] = {}
    elif path.startswith("/api/v1/sync/devices"):
        headers = live.user_headers
    else:
        headers = live.device_headers

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=40,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def answers_as_documented(case: Any) -> None:
        if case.query and "wait" in case.query:
            case.query["wait"] = 0  # a long-poll would hold the run for up to 55 s
        case.call_and_validate(headers=headers, checks=CHECKS)

    answers_as_documented()
