"""The committed API docs match the app, and its OpenAPI document keeps the docs' promises."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.routing import Match

from shelfsync.server.apidocs import METHOD_ORDER, diff_docs, render_docs, temporary_app

DOCS_DIR = Path(__file__).resolve().parents[2] / "docs" / "api"
VERSIONED = "/api/v1/sync/"
UNVERSIONED = "/api/sync/"
PROBLEM_CONTENT = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


@pytest.fixture(scope="module")
def docs_app() -> Iterator[FastAPI]:
    with temporary_app() as app:
        yield app


@pytest.fixture(scope="module")
def schema(docs_app: FastAPI) -> dict[str, Any]:
    return docs_app.openapi()


def operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in sorted(schema["paths"].items()):
        for method, operation in item.items():
            if method in METHOD_ORDER:
                yield path, method, operation


def is_served(app: FastAPI, method: str, path: str) -> bool:
    """Whether a route answers METHOD at this path (its path parameters filled in)."""
    scope = {
        "type": "http",
        "method": method.upper(),
        "path": re.sub(r"\{[^}]+\}", "1", path),
        "root_path": "",
        "query_string": b"",
        "headers": [],
    }
    return any(route.matches(scope)[0] is Match.FULL for route in app.router.routes)


def test_committed_docs_are_up_to_date(schema: dict[str, Any]) -> None:
    diff = diff_docs(render_docs(schema), DOCS_DIR)
    assert diff.clean, "docs/api is stale: run `make docs`\n" + "\n".join(
        diff.lines(Path("docs/api"))
    )


def test_responses_are_typed_and_errors_are_problems(schema: dict[str, Any]) -> None:
    assert "Problem" in schema["components"]["schemas"]
    for name in ("HTTPValidationError", "ValidationError"):
        assert name not in schema["components"]["schemas"], f"{name} is never answered"
    failures: list[str] = []
    for path, method, operation in operations(schema):
        where = f"{method.upper()} {path}"
        responses: dict[str, Any] = operation.get("responses", {})
        if not any(status.startswith("2") for status in responses):
            failures.append(f"{where}: no 2xx response")
        for status, response in responses.items():
            if status == "422":
                failures.append(f"{where}: declares 422 (validation errors are 400 problems)")
            if status[:1] in {"4", "5"} and response.get("content") != PROBLEM_CONTENT:
                failures.append(
                    f"{where}: {status} is not a Problem under application/problem+json"
                    f" (content: {response.get('content')!r})"
                )
    assert not failures, "\n".join(failures)
    assert '"422"' not in json.dumps(schema), "a 422 is declared outside the operations"


def test_versioned_sync_paths_name_their_unversioned_alias(
    schema: dict[str, Any], docs_app: FastAPI
) -> None:
    checked = 0
    failures: list[str] = []
    for path, method, operation in operations(schema):
        if not path.startswith(VERSIONED):
            continue
        checked += 1
        where = f"{method.upper()} {path}"
        expected = UNVERSIONED + path[len(VERSIONED) :]
        alias = operation.get("x-alias")
        if alias != expected:
            failures.append(f"{where}: x-alias is {alias!r}, expected {expected!r}")
        elif not is_served(docs_app, method, alias):
            failures.append(f"{where}: the alias {method.upper()} {alias} is not served")
    assert checked, f"no operation under {VERSIONED} in the schema"
    assert not failures, "\n".join(failures)
