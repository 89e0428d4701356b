"""GET /openapi.json (the OpenAPI document) and GET /docs (the same, as a web page).

The document is built once, when the server starts (inferd/apidoc.py builds it from the
routes and their pydantic models). The page is rendered here from the document as
plain HTML with one stylesheet: no script, nothing from a CDN, so it works offline and
under the same strict Content-Security-Policy as the chat page.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from sanic import Request, Sanic
from sanic.response import HTTPResponse, html, raw
from sanic.response import json as json_response

from inferd.apidoc import build_document, describe
from inferd.webui import SECURITY_HEADERS

STYLESHEET = "/docs/docs.css"
CSS = """
body { font: 15px/1.5 system-ui, sans-serif; margin: 0 auto; max-width: 70rem; padding: 1rem 2rem;
  color: #1d232b; }
h2 { border-bottom: 1px solid #d0d7de; margin-top: 2.5rem; }
article { border: 1px solid #d0d7de; border-radius: 6px; margin: 1rem 0; padding: 0 1rem; }
.method { border-radius: 4px; color: #fff; font: bold 13px monospace; padding: 2px 8px; }
.get { background: #1f6feb; } .post { background: #1a7f37; } .delete { background: #cf222e; }
.head { background: #6e7781; }
table { border-collapse: collapse; margin: .5rem 0; } td, th { border: 1px solid #d0d7de;
  padding: 2px 8px; text-align: left; vertical-align: top; }
pre { background: #f6f8fa; overflow-x: auto; padding: .5rem; white-space: pre-wrap; }
nav li { list-style: none; } code { font-size: 13px; }
"""


def _type(schema: dict[str, Any]) -> str:
    """A short HTML label for a schema: its type, a link to a named schema, or a union."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f'<a href="#schema-{escape(name)}">{escape(name)}</a>'
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " | ".join(_type(option) for option in schema[key])
    if "const" in schema:
        return f"<code>{escape(json.dumps(schema['const']))}</code>"
    if "enum" in schema:
        return " | ".join(f"<code>{escape(json.dumps(v))}</code>" for v in schema["enum"])
    if schema.get("type") == "array":
        return f"array of {_type(schema.get('items', {}))}"
    return escape(str(schema.get("type", "any")))


def _limits(schema: dict[str, Any]) -> str:
    keys = ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum", "minLength",
            "maxLength", "minItems", "maxItems", "pattern", "default")  # fmt: skip
    return ", ".join(f"{key} {json.dumps(schema[key])}" for key in keys if key in schema)


def _schema_table(name: str, schema: dict[str, Any]) -> str:
    rows = []
    required = set(schema.get("required", []))
    for field, spec in schema.get("properties", {}).items():
        rows.append(
            f"<tr><td><code>{escape(field)}</code>{' *' if field in required else ''}</td>"
            f"<td>{_type(spec)}</td><td>{escape(_limits(spec))}</td>"
            f"<td>{escape(spec.get('description', ''))}</td></tr>"
        )
    table = (
        "<table><tr><th>field (* required)</th><th>type</th><th>limits</th><th>notes</th></tr>"
        + "".join(rows)
        + "</table>"
        if rows
        else f"<pre>{escape(json.dumps(schema, indent=2))}</pre>"
    )
    doc = escape(schema.get("description", ""))
    return (
        f'<section id="schema-{escape(name)}"><h3>{escape(name)}</h3><p>{doc}</p>{table}</section>'
    )


def _operation(path: str, method: str, op: dict[str, Any]) -> str:
    parts = [
        f'<article id="{escape(op["operationId"])}"><h3><span class="method {method}">'
        f"{method.upper()}</span> <code>{escape(path)}</code> {escape(op['summary'])}</h3>"
    ]
    if "description" in op:
        parts.append(f"<pre>{escape(op['description'])}</pre>")
    for param in op.get("parameters", []):
        parts.append(
            f"<p>{escape(param['in'])} parameter <code>{escape(param['name'])}</code> "
            f"{escape(param.get('description', ''))}</p>"
        )
    if "requestBody" in op:
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        parts.append(f"<p>Request body (JSON): {_type(schema)}</p>")
    rows = []
    for status, response in op["responses"].items():
        kinds = [
            f"{escape(media)} {_type(spec['schema'])}"
            for media, spec in response.get("content", {}).items()
        ]
        rows.append(
            f"<tr><td>{escape(status)}</td><td>{escape(response['description'])}</td>"
            f"<td>{'<br>'.join(kinds)}</td></tr>"
        )
    parts.append("<table><tr><th>status</th><th>meaning</th><th>body</th></tr>")
    parts.extend(rows)
    parts.append("</table></article>")
    return "".join(parts)


def render_page(document: dict[str, Any]) -> str:
    """The whole document as one HTML page: operations by tag, then the schemas."""
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            by_tag.setdefault(op["tags"][0], []).append((path, method, op))
    info = document["info"]
    nav, sections = [], []
    for tag, ops in by_tag.items():
        links = "".join(
            f'<li><a href="#{escape(op["operationId"])}">{method.upper()} {escape(path)}</a></li>'
            for path, method, op in ops
        )
        nav.append(f"<li>{escape(tag)}<ul>{links}</ul></li>")
        body = "".join(_operation(path, method, op) for path, method, op in ops)
        sections.append(f"<h2>{escape(tag)}</h2>{body}")
    schemas = "".join(_schema_table(n, s) for n, s in document["components"]["schemas"].items())
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<title>{escape(info["title"])} API</title><link rel="stylesheet" href="{STYLESHEET}">'
        f"</head><body><h1>{escape(info['title'])} API {escape(info['version'])}</h1>"
        f"<p>{escape(info['description'])}</p>"
        '<p>Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1)</p>'
        f"<nav><ul>{''.join(nav)}</ul></nav>{''.join(sections)}"
        f"<h2>Schemas</h2>{schemas}</body></html>"
    )


@describe("The OpenAPI 3.1 document of every route", "docs", replies={200: dict[str, Any]})
async def openapi_json(request: Request) -> HTTPResponse:
    return json_response(request.app.ctx.api_document)


@describe("The API reference as a web page", "docs", media=("text/html",))
async def docs_page(request: Request) -> HTTPResponse:
    return html(request.app.ctx.api_page, headers=SECURITY_HEADERS)


@describe("The API reference's stylesheet", "docs", media=("text/css",))
async def docs_css(request: Request) -> HTTPResponse:
    return raw(CSS, content_type="text/css; charset=utf-8", headers=SECURITY_HEADERS)


def register(app: Sanic) -> None:
    app.add_route(
        openapi_json, "/openapi.json", methods=["GET"], name="openapi_json", error_format="json"
    )
    app.add_route(docs_page, "/docs", methods=["GET"], name="docs", error_format="json")
    app.add_route(docs_css, STYLESHEET, methods=["GET"], name="docs_css", error_format="json")

    @app.before_server_start
    async def build_docs(app: Sanic) -> None:
        # Once, after every route (plugins' too) is registered; a few ms at start-up.
        app.ctx.api_document = build_document(app)
        app.ctx.api_page = render_page(app.ctx.api_document)
