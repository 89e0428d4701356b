"""inferd/apidoc.py: the OpenAPI document covers every route, validates, and holds up to a
schema-driven fuzz run (schemathesis) against a running server."""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from inferd.apidoc import build_document, describe, operation_of
from inferd.testing.fakes import make_app
from inferd.testing.live import live_server

# Schemathesis' checks that the document and the server agree: no 5xx, every status,
# content type, header and JSON body documented, and schema-invalid requests refused.
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_headers_conformance,response_schema_conformance,negative_data_rejection"
)


async def _document(tmp_path: Path) -> dict:
    app = make_app(tmp_path)
    _, response = await app.asgi_client.get("/openapi.json")
    assert response.status == 200
    return response.json


async def test_the_document_is_valid_openapi_and_names_every_route(tmp_path):
    document = await _document(tmp_path)
    validate(document)
    app = make_app(tmp_path)
    routes = {(f"/{r.path}", m.lower()) for r in app.router.routes for m in r.methods}
    documented = {
        (re.sub(r"\{(\w+)\}", r"<\1>", path), method)
        for path, methods in document["paths"].items()
        for method in methods
    }
    plain = {(re.sub(r"<(\w+)(:[^>]*)?>", r"<\1>", path), method) for path, method in routes}
    assert plain == documented
    undocumented = [
        f"{method.upper()} {path}"
        for path, methods in document["paths"].items()
        for method, op in methods.items()
        if op.get("x-undocumented")
    ]
    assert undocumented == []


async def test_bodies_and_replies_come_from_the_pydantic_models(tmp_path):
    document = await _document(tmp_path)
    schemas = document["components"]["schemas"]
    chat = document["paths"]["/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ChatCompletionRequest"
    }
    assert set(chat["responses"]) >= {"200", "400", "401", "404", "429", "500"}
    stream = chat["responses"]["200"]["content"]["text/event-stream"]
    assert stream["x-event-data"] == {"$ref": "#/components/schemas/ChatCompletionChunk"}
    assert chat["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"
    }
    # API.md's chat body keeps its kebab-case names; its errors keep API.md's shape.
    assert "model-name" in schemas["ChatRequest"]["properties"]
    native = document["paths"]["/completions"]["post"]["responses"]["400"]
    assert native["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorReply")
    assert schemas["ChatCompletionRequest"]["properties"]["n"]["anyOf"][0] == {
        "const": 1,
        "type": "integer",
    }


async def test_every_response_documents_x_request_id(tmp_path):
    document = await _document(tmp_path)
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            headers = [p["name"] for p in operation["parameters"] if p["in"] == "header"]
            assert "X-Request-Id" in headers, (path, method)
            for status, response in operation["responses"].items():
                assert "X-Request-Id" in response["headers"], (path, method, status)


def test_a_route_without_a_description_is_marked(tmp_path):
    app = make_app(tmp_path)

    async def extra(request):
        return None

    app.add_route(extra, "/extra", methods=["GET"], name="extra")
    app.router.finalize()
    document = build_document(app)
    assert document["paths"]["/extra"]["get"]["x-undocumented"] is True


def test_describe_attaches_an_operation():
    @describe("Say hello", "misc", errors=(500,))
    async def hello(request):
        return None

    assert operation_of(hello).summary == "Say hello"
    assert operation_of(hello).errors == (500,)


@pytest.mark.skipif(
    shutil.which("st", path=str(Path(sys.executable).parent)) is None, reason="no st"
)
async def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(tmp_path):
    """A bounded fuzz run: every phase, 20 cases per operation, a fixed seed."""
    app = make_app(tmp_path)
    st = str(Path(sys.executable).parent / "st")
    async with live_server(app) as url:
        process = await asyncio.create_subprocess_exec(
            st, "run", f"{url}/openapi.json",
            "--checks", CHECKS,
            "--max-examples", "20",
            "--seed", "1",
            "--workers", "1",
            "--exclude-path", "/chat/ws",  # a WebSocket upgrade, not an HTTP exchange
            "--request-timeout", "20",
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await asyncio.wait_for(process.communicate(), timeout=300)
    report = output.decode(errors="replace")
    summary = re.search(r"(\d+) generated, (\d+) passed", report)
    print(report[-1500:])  # shown with -rA / on failure: how many cases ran
    assert process.returncode == 0, report[-4000:]
    assert summary is not None and summary[1] == summary[2]
    assert int(summary[1]) > 500
