"""inferd/errors.py (and inferd/requests.py): every failure is `{"error": ...}` with its status."""

from __future__ import annotations

import logging

import httpx
import pytest
from sanic import Request
from sanic import exceptions as sanic_exceptions

from inferd.errors import (
    CLIENT_CLOSED,
    ApiError,
    BadRequest,
    Forbidden,
    InternalError,
    NotFound,
    Overloaded,
    RetryLater,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    describe_exception,
)
from inferd.testing.fakes import FakeBackend, make_app
from inferd.testing.live import live_server


def _app_raising(tmp_path, exception: BaseException):
    app = make_app(tmp_path)

    async def boom(request: Request):
        raise exception

    app.add_route(boom, "/boom", methods=["GET"], name="boom")
    return app


@pytest.mark.parametrize(
    ("exception", "status"),
    [
        (BadRequest("bad value"), 400),
        (Unauthorized("bad value"), 401),
        (Forbidden("bad value"), 403),
        (NotFound("bad value"), 404),
        (TooManyRequests("bad value"), 429),
        (ServiceUnavailable("bad value"), 503),
        (ApiError("bad value", status=402), 402),
        (ApiError(418, "bad value"), 418),  # the form people write first works too
    ],
)
async def test_api_errors_keep_their_status_and_message(tmp_path, exception, status):
    app = _app_raising(tmp_path, exception)
    _, response = await app.asgi_client.get("/boom")
    assert response.status == status
    assert response.json == {"error": "bad value"}


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        ((400,), {}, TypeError),
        ((400, "message"), {"status": 401}, TypeError),
        (("message", "detail"), {}, TypeError),
        (("message",), {"status": 200}, ValueError),
    ],
)
def test_an_api_error_built_wrong_says_how_to_build_it(args, kwargs, error):
    with pytest.raises(error, match=r"ApiError\(message, status=N\)|status must be 400-599"):
        ApiError(*args, **kwargs)


def test_an_api_error_without_a_status_is_a_500():
    assert ApiError("oops").status == 500
    assert BadRequest("oops").status == 400


async def test_api_error_headers_reach_the_client(tmp_path):
    app = _app_raising(tmp_path, TooManyRequests("slow down", headers={"Retry-After": "7"}))
    _, response = await app.asgi_client.get("/boom")
    assert response.status == 429
    assert response.headers["retry-after"] == "7"


async def test_unexpected_exception_is_a_500_quoting_the_logged_request_id(tmp_path, caplog):
    app = _app_raising(tmp_path, ZeroDivisionError("secret detail"))
    with caplog.at_level(logging.ERROR, logger="inferd"):
        request, response = await app.asgi_client.get("/boom")
    assert response.status == 500
    assert response.json == {"error": f"internal server error (request id {request.id})"}
    assert "secret detail" not in response.text  # no internals leak to the client
    logged = [r for r in caplog.records if r.name == "inferd" and str(request.id) in r.message]
    assert logged
    assert logged[0].exc_info is not None  # the traceback is in the log


async def test_internal_api_error_is_a_500_with_its_message_and_is_logged(tmp_path, caplog):
    app = _app_raising(tmp_path, InternalError("model exploded"))
    with caplog.at_level(logging.ERROR, logger="inferd"):
        request, response = await app.asgi_client.get("/boom")
    assert response.status == 500
    assert response.json == {"error": "model exploded"}
    assert any(str(request.id) in r.message for r in caplog.records)


@pytest.mark.parametrize(
    ("exception", "level"),
    [
        (Overloaded("the queue is full; retry shortly"), logging.WARNING),  # shed on purpose
        (RetryLater("the session store failed; retry shortly"), logging.ERROR),
        (InternalError("model exploded"), logging.ERROR),
    ],
)
async def test_shed_load_is_logged_as_a_warning_and_failures_as_errors(
    tmp_path, caplog, exception, level
):
    app = _app_raising(tmp_path, exception)
    with caplog.at_level(logging.INFO, logger="inferd"):
        _, response = await app.asgi_client.get("/boom")
    assert response.status == exception.status
    [record] = [r for r in caplog.records if exception.message in r.message]
    assert record.levelno == level


async def test_a_backend_exception_outside_generation_is_a_500_with_request_id(tmp_path):
    class BrokenTokenizer(FakeBackend):
        def encode_text(self, text):
            raise ValueError("tokenizer broke")

    app = make_app(tmp_path, BrokenTokenizer())
    request, response = await app.asgi_client.post(
        "/completions", json={"model": "fake", "prompt": "hi"}
    )
    assert response.status == 500
    assert f"request id {request.id}" in response.json["error"]


async def test_unknown_route_is_404_json(tmp_path):
    app = make_app(tmp_path)
    _, response = await app.asgi_client.get("/no/such/route")
    assert response.status == 404
    assert set(response.json) == {"error"}


async def test_wrong_method_is_405_json(tmp_path):
    app = make_app(tmp_path)
    _, response = await app.asgi_client.get("/completions")
    assert response.status == 405
    assert set(response.json) == {"error"}


async def test_body_over_the_size_limit_is_413_json(tmp_path):
    # Enforced by Sanic's HTTP server (not its ASGI mode): a real socket.
    app = make_app(tmp_path, server={"keepalive_interval": 0.2, "request_max_size": 1024})
    async with live_server(app) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.post("/completions", json={"model": "fake", "prompt": "x" * 2000})
    assert response.status_code == 413
    assert set(response.json()) == {"error"}


async def test_sanic_service_unavailable_keeps_its_503(tmp_path):
    app = _app_raising(tmp_path, sanic_exceptions.ServiceUnavailable("Response Timeout"))
    _, response = await app.asgi_client.get("/boom")
    assert response.status == 503
    assert response.json == {"error": "Response Timeout"}


async def test_a_json_answer_slower_than_the_response_timeout_is_a_503_not_a_500(tmp_path):
    # A non-streamed answer writes nothing until it is done: Sanic gives up on it.
    app = make_app(
        tmp_path,
        FakeBackend(reply="a", step_delay=0.8),
        server={"keepalive_interval": 0.1, "response_timeout": 0.3},
    )
    async with live_server(app) as url, httpx.AsyncClient() as client:
        response = await client.post(f"{url}/completions", json={"model": "fake", "prompt": "x"})
    assert response.status_code == 503
    assert response.json() == {"error": "Response Timeout"}


GENERATING_ROUTES = ("/completions", "/chat/completions")


async def test_json_nested_too_deeply_is_400_not_500(tmp_path):
    app = make_app(tmp_path)
    body = '{"model": "fake", "prompt": "x", "stop": ' + "[" * 100_000 + "]" * 100_000 + "}"
    for path in GENERATING_ROUTES:
        _, response = await app.asgi_client.post(path, content=body.encode())
        assert response.status == 400, path
        assert response.json == {"error": "malformed JSON body: nested too deeply"}


async def test_malformed_json_is_400(tmp_path):
    app = make_app(tmp_path)
    for path in GENERATING_ROUTES:
        _, response = await app.asgi_client.post(
            path, content=b'{"model": "fake",', headers={"content-type": "application/json"}
        )
        assert response.status == 400, path
        assert response.json["error"].startswith("malformed JSON body"), path


async def test_empty_body_is_400(tmp_path):
    app = make_app(tmp_path)
    for path in GENERATING_ROUTES:
        _, response = await app.asgi_client.post(path)
        assert response.status == 400, path
        assert response.json == {"error": "request body is empty; send a JSON object"}, path


async def test_json_that_is_not_an_object_is_400(tmp_path):
    app = make_app(tmp_path)
    for body in (b"[1, 2]", b'"text"', b"42", b"null"):
        _, response = await app.asgi_client.post("/completions", content=body)
        assert response.status == 400, body
        assert response.json == {"error": "request body must be a JSON object"}, body


async def test_invalid_utf8_body_is_400(tmp_path):
    app = make_app(tmp_path)
    _, response = await app.asgi_client.post("/completions", content=b'{"prompt": "\xff"}')
    assert response.status == 400
    assert "malformed JSON body" in response.json["error"]


def test_a_client_that_went_away_is_a_499_and_no_logged_failure(caplog):
    # Sanic cancels the handler of a request whose client disconnected.
    with caplog.at_level(logging.ERROR, logger="inferd"):
        described = describe_exception(None, sanic_exceptions.RequestCancelled())  # type: ignore[arg-type]
    assert described == (CLIENT_CLOSED, "client closed request", {}) and CLIENT_CLOSED == 499
    assert caplog.records == []
