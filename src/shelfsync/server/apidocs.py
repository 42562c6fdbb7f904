"""Generated API documentation: `openapi.json` plus one Markdown page per tag.

The schema comes from the real app (`create_app`) built on a throwaway SQLite
database in a temporary directory; nothing touches the network. Rendering is
pure (`render_docs(schema)` maps file names to their text) and deterministic,
so a test can compare it with the committed `docs/api/` files.

    python -m shelfsync.server.apidocs docs/api          # write the files
    python -m shelfsync.server.apidocs --check docs/api  # exit 1 when stale
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from shelfsync.server.app import create_app, open_database
from shelfsync.server.settings import Settings

__all__ = [
    "METHOD_ORDER",
    "SCHEMA_FILE",
    "SCHEMA_LINK",
    "DocsDiff",
    "build_schema",
    "diff_docs",
    "main",
    "render_docs",
    "render_schema",
    "render_tag",
    "temporary_app",
    "type_label",
    "write_docs",
]

SCHEMA_FILE = "openapi.json"
SCHEMA_LINK = "docs/api/openapi.json"
"""How the Markdown pages name the schema file (relative to the repository root)."""

METHOD_ORDER = ("get", "head", "post", "put", "patch", "delete", "options", "trace")
_UNTAGGED = "default"
_JSON = "application/json"
_NONE = "—"
_REF_PREFIX = "#/"


# -- building the schema ------------------------------------------------------


@contextmanager
def temporary_app() -> Iterator[FastAPI]:
    """The real app on a fresh SQLite database in a temporary directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="shelfsync-apidocs-") as tmp:
        settings = Settings(data_dir=Path(tmp))
        db = open_database(settings)
        try:
            yield create_app(settings, db=db)
        finally:
            db.dispose()


def build_schema() -> dict[str, Any]:
    """The app's OpenAPI document, exactly as `/openapi.json` would serve it."""
    with temporary_app() as app:
        return app.openapi()


# -- rendering ----------------------------------------------------------------


def render_schema(schema: Mapping[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def render_docs(schema: Mapping[str, Any]) -> dict[str, str]:
    """Every generated file: `openapi.json` and `<tag>.md` for each tag, name -> text."""
    files = {SCHEMA_FILE: render_schema(schema)}
    for name, description in _tags(schema):
        files[f"{_slug(name)}.md"] = render_tag(schema, name, description)
    return files


def render_tag(schema: Mapping[str, Any], tag: str, description: str | None = None) -> str:
    """One tag's page: title, description, then every operation carrying the tag."""
    blocks = [f"# {_title(tag)}"]
    if description and description.strip():
        blocks.append(description.strip())
    blocks.append("## Endpoints")
    operations = [op for op in _operations(schema) if tag in _op_tags(op.operation)]
    if not operations:
        blocks.append("No endpoints.")
    for op in operations:
        blocks.extend(_render_operation(schema, op))
        blocks.append("---")
    return "\n\n".join(blocks) + "\n"


@dataclass(frozen=True, slots=True)
class _Operation:
    path: str
    method: str
    operation: Mapping[str, Any]
    path_parameters: Sequence[Any]


def _operations(schema: Mapping[str, Any]) -> list[_Operation]:
    found: list[_Operation] = []
    for path in sorted(schema.get("paths", {})):
        item = _resolve(schema, schema["paths"][path])
        for method in METHOD_ORDER:
            if method in item:
                found.append(_Operation(path, method, item[method], item.get("parameters", [])))
    return found


def _op_tags(operation: Mapping[str, Any]) -> list[str]:
    tags: list[str] = operation.get("tags") or [_UNTAGGED]
    return tags


def _tags(schema: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """The declared tags in their order, then any tag an operation uses undeclared."""
    declared: list[tuple[str, str | None]] = [
        (tag["name"], tag.get("description")) for tag in schema.get("tags", [])
    ]
    known = {name for name, _ in declared}
    used = {tag for op in _operations(schema) for tag in _op_tags(op.operation)}
    return declared + [(name, None) for name in sorted(used - known)]


def _render_operation(schema: Mapping[str, Any], op: _Operation) -> list[str]:
    operation = op.operation
    method = op.method.upper()
    blocks = [f"### {method} {op.path}"]
    for key in ("summary", "description"):
        text = str(operation.get(key) or "").strip()
        if text:
            blocks.append(text)
    if operation.get("deprecated"):
        blocks.append("**Deprecated.**")
    alias = operation.get("x-alias")
    if alias:
        blocks.append(f"Alias: `{method} {alias}`")
    blocks.append(f"**Authentication:** {_authentication(schema, operation)}")
    blocks.extend(_render_parameters(schema, op))
    blocks.extend(_render_request_body(schema, op))
    blocks.extend(_render_responses(schema, operation))
    return blocks


def _authentication(schema: Mapping[str, Any], operation: Mapping[str, Any]) -> str:
    requirements = operation.get("security", schema.get("security"))
    if not requirements:
        return "None"
    schemes = schema.get("components", {}).get("securitySchemes", {})
    alternatives: list[str] = []
    optional = False
    for requirement in requirements:
        if not requirement:
            optional = True  # `{}` among the alternatives: anonymous is allowed too
            continue
        names = sorted(requirement)
        label = " and ".join(_scheme_label(name, schemes.get(name, {})) for name in names)
        if label not in alternatives:
            alternatives.append(label)
    if not alternatives:
        return "None"
    return f"{'Optional' if optional else 'Required'} ({' or '.join(alternatives)})"


def _scheme_label(name: str, scheme: Mapping[str, Any]) -> str:
    kind = scheme.get("type")
    if kind == "http" and str(scheme.get("scheme", "")).lower() == "bearer":
        return "Bearer JWT"
    if kind == "http":
        return f"HTTP {scheme.get('scheme', '')}".strip()
    if kind == "apiKey":
        return f"API key `{scheme.get('name', name)}` in {scheme.get('in', 'header')}"
    return name


def _render_parameters(schema: Mapping[str, Any], op: _Operation) -> list[str]:
    merged: dict[tuple[str, str], Mapping[str, Any]] = {}
    for raw in [*op.path_parameters, *op.operation.get("parameters", [])]:
        param = _resolve(schema, raw)
        merged[(param["name"], param["in"])] = param
    if not merged:
        return []
    rows = [
        "| Name | In | Required | Description |",
        "|------|----|----------|-------------|",
    ]
    for param in merged.values():
        description = param.get("description") or param.get("schema", {}).get("description")
        cells = [
            f"`{param['name']}`",
            param["in"],
            _yes_no(bool(param.get("required"))),
            _cell(description),
        ]
        rows.append(_row(cells))
    return ["#### Parameters", "\n".join(rows)]


def _render_request_body(schema: Mapping[str, Any], op: _Operation) -> list[str]:
    raw = op.operation.get("requestBody")
    if raw is None:
        return []
    body = _resolve(schema, raw)
    blocks = ["#### Request Body"]
    description = str(body.get("description") or "").strip()
    if description:
        blocks.append(description)
    if not body.get("required"):
        blocks.append("The body is optional.")
    content: Mapping[str, Any] = body.get("content", {})
    for media_type, media in content.items():
        blocks.append(f"`Content-Type: {media_type}`")
        media_schema = media.get("schema")
        if media_schema is None:
            continue
        target = _unwrap_nullable(media_schema)
        resolved = _resolve(schema, target)
        properties: Mapping[str, Any] = resolved.get("properties", {})
        if properties:
            blocks.append(_fields_table(schema, resolved))
        else:
            blocks.append(f"Type: {type_label(media_schema)}")
        pointer = (
            target["$ref"][1:]
            if isinstance(target.get("$ref"), str) and target["$ref"].startswith(_REF_PREFIX)
            else _pointer(
                "paths", op.path, op.method, "requestBody", "content", media_type, "schema"
            )
        )
        blocks.append(f"Full schema: `{SCHEMA_LINK}` (`#{pointer}`)")
    return blocks


def _fields_table(schema: Mapping[str, Any], model: Mapping[str, Any]) -> str:
    required = set(model.get("required", []))
    rows = [
        "| Field | Type | Required | Description |",
        "|-------|------|----------|-------------|",
    ]
    for name, field in model.get("properties", {}).items():
        description = _field_description(schema, field)
        cells = [f"`{name}`", type_label(field), _yes_no(name in required), _cell(description)]
        rows.append(_row(cells))
    return "\n".join(rows)


def _field_description(schema: Mapping[str, Any], field: Mapping[str, Any]) -> str:
    description = str(field.get("description") or "").strip()
    if not description and "$ref" in _unwrap_nullable(field):
        # A field typed by a model: fall back to the model's own description.
        target = _resolve(schema, _unwrap_nullable(field))
        description = str(target.get("description") or "").strip()
    default = field.get("default")
    if default is not None:
        shown = f"Default: {_literal(default)}."
        description = f"{description} {shown}" if description else shown
    return description


def _render_responses(schema: Mapping[str, Any], operation: Mapping[str, Any]) -> list[str]:
    responses: Mapping[str, Any] = operation.get("responses", {})
    if not responses:
        return []
    rows = [
        "| Status | Description | Body |",
        "|--------|-------------|------|",
    ]
    for status in sorted(responses, key=_status_key):
        response = _resolve(schema, responses[status])
        cells = [status, _cell(response.get("description")), _cell(_body_label(response))]
        rows.append(_row(cells))
    return ["#### Responses", "\n".join(rows)]


def _status_key(status: str) -> tuple[int, str]:
    return (0, status) if status[:1].isdigit() else (1, status)


def _body_label(response: Mapping[str, Any]) -> str:
    content: Mapping[str, Any] = response.get("content") or {}
    labels: list[str] = []
    for media_type, media in content.items():
        media_schema = (media or {}).get("schema")
        if media_schema is None:
            labels.append(media_type)
        elif media_type == _JSON:
            labels.append(type_label(media_schema))
        else:
            labels.append(f"{type_label(media_schema)} ({media_type})")
    return ", ".join(labels) or _NONE


def type_label(node: Any) -> str:
    """A JSON schema as a short phrase: `Device`, `array of string`, `string or null`."""
    if not isinstance(node, Mapping) or not node:
        return "any"
    ref = node.get("$ref")
    if isinstance(ref, str):
        return ref.rsplit("/", 1)[-1]
    if "const" in node:
        return _literal(node["const"])
    if "enum" in node:
        return " or ".join(_literal(value) for value in node["enum"])
    for key in ("anyOf", "oneOf"):
        if key in node:
            return _union([type_label(option) for option in node[key]])
    if "allOf" in node:
        parts = [type_label(part) for part in node["allOf"]]
        return " and ".join(dict.fromkeys(parts))
    kind = node.get("type")
    if isinstance(kind, list):
        return _union([type_label({**node, "type": item}) for item in kind])
    if kind == "array":
        return f"array of {type_label(node['items'])}" if node.get("items") else "array"
    if kind == "object":
        extra = node.get("additionalProperties")
        if isinstance(extra, Mapping) and extra:
            return f"map of string to {type_label(extra)}"
        return "object"
    if isinstance(kind, str):
        fmt = node.get("format") or node.get("contentMediaType")
        return f"{kind} ({fmt})" if fmt else kind
    return "any"


def _union(labels: list[str]) -> str:
    """`X or Y`, with `null` always last: `Device or null`."""
    unique = list(dict.fromkeys(labels))
    if "null" in unique:
        unique = [label for label in unique if label != "null"] + ["null"]
    return " or ".join(unique)


def _literal(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return f"`{text}`"


def _unwrap_nullable(node: Mapping[str, Any]) -> Mapping[str, Any]:
    """`anyOf: [X, null]` -> X; anything else as it is."""
    for key in ("anyOf", "oneOf"):
        options = node.get(key)
        if isinstance(options, list):
            rest = [option for option in options if option != {"type": "null"}]
            if len(rest) == 1 and isinstance(rest[0], Mapping):
                return rest[0]
    return node


def _resolve(schema: Mapping[str, Any], node: Any) -> Mapping[str, Any]:
    """Follow local `$ref`s (`#/components/...`) until a real object."""
    seen: set[str] = set()
    while isinstance(node, Mapping) and isinstance(node.get("$ref"), str):
        ref: str = node["$ref"]
        if not ref.startswith(_REF_PREFIX) or ref in seen:
            break
        seen.add(ref)
        target: Any = schema
        for part in ref[len(_REF_PREFIX) :].split("/"):
            key = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, Mapping) or key not in target:
                return node
            target = target[key]
        node = target
    return node if isinstance(node, Mapping) else {}


def _pointer(*parts: str) -> str:
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in parts)


def _title(tag: str) -> str:
    return tag[:1].upper() + tag[1:]


def _slug(tag: str) -> str:
    return re.sub(r"[^a-z0-9_.-]+", "-", tag.lower()).strip("-.") or _UNTAGGED


def _yes_no(value: bool) -> str:
    return "Yes" if value else "No"


def _cell(value: Any) -> str:
    """Table-safe: one line, pipes escaped."""
    text = " ".join(str(value or "").split())
    return text.replace("|", "\\|")


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


# -- files --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DocsDiff:
    """How a docs directory differs from what the generator renders."""

    missing: list[str]
    stale: list[str]
    obsolete: list[str]

    @property
    def clean(self) -> bool:
        return not (self.missing or self.stale or self.obsolete)

    def lines(self, outdir: Path) -> list[str]:
        return [
            f"  {kind}: {outdir / name}"
            for kind, names in (
                ("missing", self.missing),
                ("stale", self.stale),
                ("obsolete", self.obsolete),
            )
            for name in names
        ]


def diff_docs(files: Mapping[str, str], outdir: Path) -> DocsDiff:
    """Compare byte for byte; *.md/*.json files nothing renders any more are obsolete."""
    missing: list[str] = []
    stale: list[str] = []
    for name in sorted(files):
        path = outdir / name
        if not path.is_file():
            missing.append(name)
        elif path.read_bytes() != files[name].encode("utf-8"):
            stale.append(name)
    present = (
        {p.name for p in outdir.iterdir() if p.is_file() and p.suffix in {".md", ".json"}}
        if outdir.is_dir()
        else set()
    )
    return DocsDiff(missing, stale, sorted(present - set(files)))


def write_docs(files: Mapping[str, str], outdir: Path) -> list[str]:
    """Write the files that differ (others keep their mtime); return their names."""
    outdir.mkdir(parents=True, exist_ok=True)
    changed = diff_docs(files, outdir)
    written = sorted([*changed.missing, *changed.stale])
    for name in written:
        (outdir / name).write_bytes(files[name].encode("utf-8"))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shelfsync.server.apidocs",
        description="Generate the API docs (openapi.json and one Markdown page per tag).",
    )
    parser.add_argument("outdir", type=Path, help="directory of the docs, e.g. docs/api")
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 when a file is missing, stale or obsolete",
    )
    args = parser.parse_args(argv)
    outdir: Path = args.outdir
    files = render_docs(build_schema())
    if args.check:
        diff = diff_docs(files, outdir)
        if diff.clean:
            print(f"{outdir}: up to date ({len(files)} files)")
            return 0
        print(f"{outdir} is stale: run `make docs`", file=sys.stderr)
        print("\n".join(diff.lines(outdir)), file=sys.stderr)
        return 1
    written = write_docs(files, outdir)
    for name in written:
        print(f"wrote {outdir / name}")
    obsolete = diff_docs(files, outdir).obsolete
    for name in obsolete:
        print(f"obsolete (not generated any more, delete it): {outdir / name}", file=sys.stderr)
    if not written:
        print(f"{outdir}: up to date ({len(files)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
