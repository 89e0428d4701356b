"""The OpenAPI 3.1 document of every route, built from the routes themselves.

Each route handler carries a `@describe(...)`: its summary, its request body model, its
reply models by status, whether it can stream, and the errors it answers.
build_document() walks the app's router -- so every registered route appears, described
or not -- and turns the named pydantic models into JSON Schema with pydantic's own
generator. No schema is written by hand, so the document cannot drift from the code.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from importlib import metadata
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter
from sanic import Sanic

from inferd.openai.responses import ErrorResponse
from inferd.replies import ErrorReply
from inferd.request_ids import REQUEST_ID_HEADER

F = TypeVar("F", bound=Callable[..., Any])
_ATTRIBUTE = "__inferd_operation__"
_REF = "#/components/schemas/{model}"
# On every request and response (request_ids.py): a client's well-formed id, else a
# fresh one. Written out in each operation, as the /docs page reads them.
_REQUEST_ID = {
    "description": "the id the request is logged under: the client's own X-Request-Id "
    "when well-formed (1-128 visible ASCII characters), else a fresh UUID",
    "schema": {"type": "string"},
}
_REQUEST_ID_PARAMETER = {
    "name": REQUEST_ID_HEADER,
    "in": "header",
    "description": "an id to log the request under and echo back (1-128 visible ASCII "
    "characters; otherwise a fresh one is made)",
    "schema": {"type": "string"},
}
# What any route may answer: a plugin's refusal (401 auth, 429 rate limit) or a failure.
COMMON_ERRORS = (401, 429, 500)
# ...and a route that reads a body or generates (502/504: a remote model's upstream
# failed or was too slow, inferd/remote/).
BODY_ERRORS = (400, 413, *COMMON_ERRORS)
GENERATION_ERRORS = (400, 404, 413, *COMMON_ERRORS, 502, 503, 504)


@dataclass(frozen=True, slots=True)
class Operation:
    """What a route takes and answers; see describe()."""

    summary: str
    tag: str
    body: type[BaseModel] | None = None
    replies: Mapping[int, Any] = field(default_factory=lambda: {200: None})
    media: tuple[str, ...] = ("application/json",)
    streams: str | None = None
    chunk: type[BaseModel] | None = None
    body_required: bool = True
    errors: tuple[int, ...] = COMMON_ERRORS
    openai_errors: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)
    request_headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)


def describe(summary: str, tag: str, **details: Any) -> Callable[[F], F]:
    """Attach an Operation to a route handler.

    replies: status -> reply model or type (None: no body of that media type);
    media: the reply's media types when it is not JSON; streams: what the
    text/event-stream reply holds when the route can stream (chunk: the model of each
    event's JSON data); body_required=False: the body may be empty; errors: the statuses
    it answers (in API.md's shape, or OpenAI's with openai_errors=True); headers: reply
    headers; request_headers and query: optional request headers and query parameters.
    """
    operation = Operation(summary, tag, **details)

    def attach(handler: F) -> F:
        setattr(handler, _ATTRIBUTE, operation)
        return handler

    return attach


def operation_of(handler: Any) -> Operation | None:
    # A WebSocket route's handler is a partial around the function that was registered.
    target = handler.args[0] if hasattr(handler, "func") and handler.args else handler
    return getattr(target, _ATTRIBUTE, None)


def _openapi_path(path: str) -> str:
    return "/" + re.sub(r"<(\w+)(?::[^>]*)?>", r"{\1}", path)


class _Schemas:
    """Collects the types an operation names and turns them into JSON Schema at the end."""

    def __init__(self) -> None:
        self._types: dict[str, tuple[str, TypeAdapter[Any]]] = {}

    def ref(self, kind: Any, mode: str) -> dict[str, Any]:
        """A placeholder resolved by resolve(); the same type is generated once."""
        key = f"{mode}:{kind!r}"
        self._types.setdefault(key, (mode, TypeAdapter(kind)))
        return {"$inferd": key}

    def resolve(self, document: dict[str, Any]) -> None:
        inputs = [(key, mode, adapter) for key, (mode, adapter) in self._types.items()]
        schemas, definitions = TypeAdapter.json_schemas(inputs, ref_template=_REF)
        by_key = {key: schema for (key, _), schema in schemas.items()}

        def replace(node: Any) -> Any:
            if isinstance(node, dict):
                if "$inferd" in node:
                    return by_key[node["$inferd"]]
                return {k: replace(v) for k, v in node.items()}
            if isinstance(node, list):
                return [replace(v) for v in node]
            return node

        document["paths"] = replace(document["paths"])
        document["components"]["schemas"] = definitions.get("$defs", {})


def _description(handler: Any) -> str:
    target = handler.args[0] if hasattr(handler, "func") and handler.args else handler
    return inspect.getdoc(target) or ""


def _responses(operation: Operation, method: str, schemas: _Schemas) -> dict[str, Any]:
    error_model = ErrorResponse if operation.openai_errors else ErrorReply
    responses: dict[str, Any] = {}
    headers = {
        name: {"description": text, "schema": {"type": "string"}}
        for name, text in operation.headers.items()
    }
    for status, reply in operation.replies.items():
        content: dict[str, Any] = {}
        for media in operation.media:
            if media == "application/json" and reply is not None:
                content[media] = {"schema": schemas.ref(reply, "serialization")}
            elif media != "application/json":
                content[media] = {"schema": {"type": "string"}}
        description = HTTPStatus(status).phrase
        if operation.streams and status == 200:
            content["text/event-stream"] = {"schema": {"type": "string"}}
            if operation.chunk is not None:  # the JSON in each `data:` line
                content["text/event-stream"]["x-event-data"] = schemas.ref(
                    operation.chunk, "serialization"
                )
            description += f"; with `stream: true`, {operation.streams}"
        response: dict[str, Any] = {"description": description}
        if content and method != "head" and status not in (204, 304):
            response["content"] = content
        response["headers"] = {REQUEST_ID_HEADER: _REQUEST_ID, **(headers if status < 300 else {})}
        responses[str(status)] = response
    for status in operation.errors:
        if str(status) in responses:
            continue
        response = {
            "description": HTTPStatus(status).phrase,
            "headers": {REQUEST_ID_HEADER: _REQUEST_ID},
        }
        if method != "head":
            schema = schemas.ref(error_model, "serialization")
            response["content"] = {"application/json": {"schema": schema}}
        responses[str(status)] = response
    return responses


def _parameters(route: Any, operation: Operation) -> list[dict[str, Any]]:
    string = {"type": "string"}
    parameters: list[dict[str, Any]] = [
        {"name": param.name, "in": "path", "required": True, "schema": string}
        for param in route.params.values()
    ]
    parameters.append(_REQUEST_ID_PARAMETER)
    for where, named in (("header", operation.request_headers), ("query", operation.query)):
        for name, text in named.items():
            parameters.append({"name": name, "in": where, "description": text, "schema": string})
    return parameters


def _operation(route: Any, method: str, schemas: _Schemas) -> dict[str, Any]:
    handler = route.handler
    operation = operation_of(handler) or Operation(
        summary=getattr(handler, "__name__", route.name), tag="undocumented", replies={200: None}
    )
    name = route.name.rsplit(".", 1)[-1]
    if method == "head":  # a GET route's HEAD twin (methods.py) is named "<name>_head"
        name = name.removesuffix("_head")
    entry: dict[str, Any] = {
        "operationId": f"{name}_{method}",
        "summary": operation.summary,
        "tags": [operation.tag],
        "responses": _responses(operation, method, schemas),
    }
    if description := _description(handler):
        entry["description"] = description
    if parameters := _parameters(route, operation):
        entry["parameters"] = parameters
    if operation.body is not None:
        entry["requestBody"] = {
            "required": operation.body_required,
            "content": {"application/json": {"schema": schemas.ref(operation.body, "validation")}},
        }
    if operation_of(handler) is None:
        entry["x-undocumented"] = True
    return entry


def build_document(app: Sanic) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route `app` has."""
    schemas = _Schemas()
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "inferd",
            "version": _version(),
            "description": "An LLM inference server: API.md's routes and an OpenAI-compatible "
            "API under /v1. With auth enabled, send `Authorization: Bearer <key>`.",
        },
        "paths": {},
        "components": {
            "schemas": {},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        # The key is optional: auth is a plugin, off unless config.toml enables it.
        "security": [{}, {"bearer": []}],
    }
    routes = sorted(app.router.routes, key=lambda route: route.path)
    for route in routes:
        path = document["paths"].setdefault(_openapi_path(route.path), {})
        for method in sorted(route.methods):
            path[method.lower()] = _operation(route, method.lower(), schemas)
    schemas.resolve(document)
    return document


def _version() -> str:
    try:
        return metadata.version("inferd")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0.0.0"
