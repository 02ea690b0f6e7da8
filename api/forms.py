"""``application/x-www-form-urlencoded`` bodies wherever JSON is accepted, as DRF's default
``FormParser`` allows.

:class:`FormBodies` is a pure ASGI middleware: it reads a form body (through the ``receive``
it was given, so an outer body-size limit still counts every byte), turns it into the JSON
object the operation's JSON body schema (in the app's own OpenAPI document) describes, and
hands the route that JSON with ``Content-Type: application/json``. Values are read as DRF
reads HTML form input:

- a field the model types as a list takes every value of a repeated key; others take the
  last value;
- a field typed as an object, a list of objects or any JSON (``parameters``,
  ``configuration``, a setting's ``value``) takes its value parsed as JSON (like DRF's
  ``JSONField``), or the text as it is when it is not JSON;
- an empty value is ``null`` for a field that allows it, else the field is left out (its
  default applies), except for text fields that may be blank and not null: ``""``;
- numbers and booleans stay text: the model converts them (``"5"``, ``"true"``).

A field the schema does not name is taken as text, or parsed as JSON when it looks like a
JSON object or list; empty, it is left out.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal
from urllib.parse import parse_qsl

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import domain_problem
from commands.errors import DomainError, PayloadTooLarge, invalid

FORM = "application/x-www-form-urlencoded"
MAX_FIELDS = 1000
Kind = Literal["text", "word", "list", "json", "scalar"]  # a word: text that cannot be blank
PRIMITIVES = {"string": "text", "integer": "scalar", "number": "scalar", "boolean": "scalar"}


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with a ``$ref`` to ``#/components/schemas/...`` followed."""
    seen = 0
    while "$ref" in schema and seen < 16:
        schema = components.get(str(schema["$ref"]).rsplit("/", 1)[-1], {})
        seen += 1
    return schema


def field_kind(schema: dict[str, Any], components: dict[str, Any]) -> tuple[Kind, bool]:
    """How a form value is read for a field of JSON ``schema``, and whether it allows null."""
    schema = _resolve(schema, components)
    members = schema.get("anyOf") or schema.get("oneOf")
    if members:
        kinds = [field_kind(m, components) for m in members if _resolve(m, components).get("type") != "null"]
        nullable = len(kinds) < len(members)
        found = {k for k, _ in kinds}
        for kind in ("json", "list", "scalar", "text"):
            if kind in found:
                return kind, nullable
        return "word", nullable
    json_type = schema.get("type")
    if json_type == "array":
        items = _resolve(schema.get("items") or {}, components)
        return ("list" if items.get("type") in PRIMITIVES and "type" in items else "json"), False
    if json_type == "string" and (schema.get("minLength", 0) >= 1 or {"format", "enum", "pattern", "const"} & set(schema)):
        return "word", False
    if json_type in PRIMITIVES:
        return PRIMITIVES[json_type], False  # type: ignore[return-value]
    return "json", json_type == "null"  # an object, or any JSON


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def form_to_json(pairs: list[tuple[str, str]], fields: dict[str, tuple[Kind, bool]]) -> dict[str, Any]:
    """The JSON object for form ``pairs`` (in order, repeated keys kept), read for the body
    ``fields`` (name → kind and nullability, see the module docstring)."""
    values: dict[str, list[str]] = {}
    for key, value in pairs:
        values.setdefault(key, []).append(value)
    out: dict[str, Any] = {}
    for key, given in values.items():
        last = given[-1]
        if key not in fields:
            if last != "":
                out[key] = _json_or_text(last) if last.lstrip()[:1] in ("{", "[") else last
            continue
        kind, nullable = fields[key]
        if kind == "list":
            out[key] = [v for v in given if v != ""]
        elif last == "" and (nullable or kind != "text"):
            if nullable:
                out[key] = None
        elif kind == "json":
            out[key] = _json_or_text(last)
        else:
            out[key] = last
    return out


class BodyFields:
    """Per operation (method and path template), the fields of its JSON body, read from the
    app's own OpenAPI document (so routes that read their body themselves count too)."""

    def __init__(self, openapi: dict[str, Any]) -> None:
        components = openapi.get("components", {}).get("schemas", {})
        self.operations: list[tuple[re.Pattern[str], str, dict[str, tuple[Kind, bool]]]] = []
        for path, item in openapi.get("paths", {}).items():
            pattern = re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)) + "$")
            for method, operation in item.items():
                content = (operation.get("requestBody") or {}).get("content", {}) if isinstance(operation, dict) else {}
                body = _resolve(content.get("application/json", {}).get("schema") or {}, components)
                props = body.get("properties") or {}
                fields = {name: field_kind(schema, components) for name, schema in props.items()}
                self.operations.append((pattern, method.upper(), fields))

    def of(self, method: str, path: str) -> dict[str, tuple[Kind, bool]]:
        """The body fields of ``method path`` ({} when unknown)."""
        for pattern, op_method, fields in self.operations:
            if op_method == method and pattern.match(path):
                return fields
        return {}


class FormBodies:
    """The middleware described in the module docstring. A form body over ``max_bytes``
    → 413; one that is not UTF-8 → 422 (both as problem+json)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int = 1024 * 1024) -> None:
        self.app, self.max_bytes = app, max_bytes
        self._body_fields: BodyFields | None = None

    def _fields(self, scope: Scope) -> dict[str, tuple[Kind, bool]]:
        if self._body_fields is None:
            app: Any = scope.get("app")
            self._body_fields = BodyFields(app.openapi() if hasattr(app, "openapi") else {})
        return self._body_fields.of(scope["method"], scope["path"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (  # a lifespan scope has no headers: checked first, or the app's lifespan never runs
            scope["type"] != "http"
            or scope["method"] not in ("POST", "PUT", "PATCH")
            or Headers(scope=scope).get("content-type", "").split(";")[0].strip().lower() != FORM
        ):
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._refuse(
                    scope, receive, send, PayloadTooLarge(f"the request body is over the limit of {self.max_bytes} bytes")
                )
                return
            if not message.get("more_body", False):
                break
        try:
            text = bytes(body).decode("utf-8")
            pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS, encoding="utf-8", errors="strict")
        except ValueError:  # UnicodeDecodeError included
            refused = invalid((), f"not a UTF-8 form of at most {MAX_FIELDS} fields", "the form body cannot be read")
            await self._refuse(scope, receive, send, refused)
            return
        converted = json.dumps(form_to_json(pairs, self._fields(scope))).encode()
        kept = [(k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length", b"transfer-encoding")]
        scope = {
            **scope,
            "headers": [*kept, (b"content-type", b"application/json"), (b"content-length", str(len(converted)).encode())],
        }
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": converted, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, exc: DomainError) -> None:
        await domain_problem(Request(scope), exc)(scope, receive, send)
