"""inferd/logs.py: readable text by default, one JSON object per line on request."""

from __future__ import annotations

import io
import json
import logging

import httpx
import pytest

from inferd import logs
from tests.processes import fake_server


@pytest.fixture
def restore_inferd_logger():
    logger = logging.getLogger("inferd")
    handlers, level = list(logger.handlers), logger.level
    yield logger
    logger.handlers[:] = handlers
    logger.setLevel(level)


def test_json_lines_carry_the_record_and_its_extra_fields(restore_inferd_logger):
    logs.configure("json")
    (handler,) = [h for h in restore_inferd_logger.handlers if getattr(h, "inferd", False)]
    out = io.StringIO()
    handler.setStream(out)
    logging.getLogger("inferd.access").info("summary", extra={"status": 200, "path": "/x"})
    line = json.loads(out.getvalue())
    assert line["level"] == "INFO" and line["logger"] == "inferd.access"
    assert (line["message"], line["status"], line["path"]) == ("summary", 200, "/x")
    assert "time" in line


def test_configure_replaces_its_handler_instead_of_stacking(restore_inferd_logger):
    logs.configure("text")
    logs.configure("json")
    ours = [h for h in restore_inferd_logger.handlers if getattr(h, "inferd", False)]
    assert len(ours) == 1


def test_a_server_with_log_format_json_writes_only_json_lines(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(
        '[server]\nlog_format = "json"\n\n[sessions]\npath = "sessions"\n\n'
        '[[models]]\nid = "fake"\nname = "fake/model"\npath = "/x"\n'
    )
    with fake_server(config, tmp_path / "server.log") as server:
        server.wait_ready()
        httpx.post(f"{server.url}/completions", json={"model": "fake", "prompt": "Hi"})
        server.process.terminate()
        assert server.exit_code(timeout=30) == 0
        text = server.log_text()
    records = [json.loads(line) for line in text.splitlines()]  # every line parses
    access = [r for r in records if r["logger"] == "inferd.access" and r["path"] == "/completions"]
    assert access[0]["status"] == 200 and access[0]["generated_tokens"] > 0
    assert any(r["logger"].startswith("sanic.") for r in records)  # Sanic's lines too
