"""inferd/docs.py: /openapi.json and the /docs page rendered from it."""

from __future__ import annotations

from inferd.docs import render_page
from inferd.testing.fakes import make_app
from inferd.webui import CSP


async def test_docs_page_lists_every_operation_and_schema(tmp_path):
    app = make_app(tmp_path)
    _, document = await app.asgi_client.get("/openapi.json")
    _, page = await app.asgi_client.get("/docs")
    assert page.status == 200
    assert page.headers["content-type"].startswith("text/html")
    for path, methods in document.json["paths"].items():
        for op in methods.values():
            assert f'id="{op["operationId"]}"' in page.text, path
    for name in document.json["components"]["schemas"]:
        assert f'id="schema-{name}"' in page.text


async def test_docs_page_is_self_contained_under_the_strict_csp(tmp_path):
    app = make_app(tmp_path)
    _, page = await app.asgi_client.get("/docs")
    assert page.headers["content-security-policy"] == CSP
    assert "<script" not in page.text and "http://" not in page.text and "https://" not in page.text
    assert '<link rel="stylesheet" href="/docs/docs.css">' in page.text
    _, css = await app.asgi_client.get("/docs/docs.css")
    assert css.status == 200 and css.headers["content-type"].startswith("text/css")


def test_text_from_the_document_is_escaped():
    document = {
        "info": {"title": "<b>x</b>", "version": "1", "description": "a & b"},
        "paths": {
            "/p": {
                "get": {
                    "operationId": "p_get",
                    "summary": "<script>alert(1)</script>",
                    "tags": ["t"],
                    "responses": {"200": {"description": "OK"}},
                }
            }
        },
        "components": {"schemas": {}},
    }
    page = render_page(document)
    assert "<script>" not in page and "&lt;script&gt;" in page and "a &amp; b" in page
