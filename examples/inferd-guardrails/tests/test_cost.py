"""The cost plugin: prices per generation in /metrics, budgets, and the ledger."""

from __future__ import annotations

import json

import pytest

from inferd.plugins.auth import key_digest
from inferd.testing import (
    REPLY,
    TRANSPORTS,
    generate,
    live_server,
    make_app,
    metric_value,
    scrape_metrics,
    settle,
)

PRICES = {"fake/model": {"prompt": 1000.0, "completion": 3000.0}}  # USD per million tokens
AUTH = {"enabled": True, "api_keys": ["alice", "bob"]}


def cost_app(tmp_path, **cost):
    return make_app(
        tmp_path,
        plugins={"enabled": ["metrics", "auth", "cost"]},
        auth=AUTH,
        cost={"prices": PRICES, **cost},
    )


def key(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {name}"}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_every_generation_is_priced_on_every_transport(tmp_path, transport):
    app = cost_app(tmp_path)
    async with live_server(app) as base:
        reply = await generate(base, transport, key("alice"))
        await settle(app)  # on_finished is async: let it run
        metrics = await scrape_metrics(base, headers=key("alice"))
    assert reply.text == REPLY
    prompt_tokens = len(app.ctx.fake_backend.prompts[-1])
    expected = (prompt_tokens * 1000.0 + len(REPLY) * 3000.0) / 1e6
    assert metric_value(metrics, "cost_usd_total", model="fake/model") == pytest.approx(expected)
    tokens = {"model": "fake/model", "kind": "completion"}
    assert metric_value(metrics, "cost_tokens_total", **tokens) == len(REPLY)


async def test_a_caller_over_budget_is_refused_before_generating(tmp_path):
    app = cost_app(tmp_path, budget_usd=0.01)  # one answer costs about 0.09 USD
    async with live_server(app) as base:
        first = await generate(base, "json", key("alice"))
        await settle(app)
        over = await generate(base, "sse", key("alice"))
        other = await generate(base, "websocket", key("bob"))
    assert first.text == REPLY
    assert (over.status, over.error) == (402, "budget of 0.01 USD used up")
    assert other.text == REPLY  # budgets are per caller
    assert len(app.ctx.fake_backend.prompts) == 2


async def test_the_ledger_sits_next_to_the_config(tmp_path):
    app = cost_app(tmp_path, ledger="ledger.jsonl")
    async with live_server(app) as base:
        await generate(base, "sse", key("bob"), session_id="s7")
        await settle(app)
    [line] = (tmp_path / "ledger.jsonl").read_text(encoding="utf-8").splitlines()
    entry = json.loads(line)
    assert entry["model"] == "fake/model"
    assert (entry["endpoint"], entry["session_id"]) == ("chat", "s7")
    assert entry["completion_tokens"] == len(REPLY)
    assert entry["finish_reason"] == "stop"
    assert entry["caller"] == key_digest("bob")  # the auth plugin's identity of the key
