"""The OpenAPI document as the docs promise it: problems typed, no 422, aliases named."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from shelfsync.protocol.problems import FieldError, Problem

__all__ = ["ALIASED_PREFIX", "UNVERSIONED_PREFIX", "build_openapi"]

ALIASED_PREFIX = "/api/v1/sync"
UNVERSIONED_PREFIX = "/api/sync"

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    problem.pop("$defs", None)  # FieldError is its own component below
    components["Problem"] = problem
    components["FieldError"] = FieldError.model_json_schema()
    # FastAPI's own validation models are never answered (we send 400 problems).
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    for path, item in schema.get("paths", {}).items():
        for operation in item.values():
            responses: dict[str, Any] = operation.get("responses", {})
            responses.pop("422", None)
            for status, response in responses.items():
                if status.isdigit() and int(status) >= 400:
                    response["content"] = {"application/problem+json": {"schema": _PROBLEM_REF}}
            if path.startswith(ALIASED_PREFIX + "/"):
                operation["x-alias"] = UNVERSIONED_PREFIX + path[len(ALIASED_PREFIX) :]
    return schema
