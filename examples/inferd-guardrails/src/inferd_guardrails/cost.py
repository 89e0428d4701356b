"""A cost-accounting plugin: what each generation costs, by model and by caller.

- `on_finished` prices the prompt and generated tokens of every generation (JSON, SSE
  and WebSocket alike, cancelled ones included), adds them to /metrics and to the
  caller's spend, and appends a line to a JSON-lines ledger. It is `async def`: inferd
  awaits it in the background, so the file write (on a worker thread) never holds up
  a token.
- `transform_request` refuses a caller whose spend has reached `budget_usd` with a
  402, before any token is spent.
- The caller is the API key's digest (with the auth plugin), else "anonymous". Spend
  is kept per server process. It fails open (the default): a bug in accounting is logged
  and skipped rather than stopping the service.

    [plugins]
    enabled = ["metrics", "auth", "rate_limit", "cost"]

    [cost]
    ledger = "ledger.jsonl"          # relative to config.toml
    budget_usd = 5.0

    [cost.prices."Qwen/Qwen2.5-0.5B-Instruct"]
    prompt = 0.10                    # USD per million tokens
    completion = 0.40
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from sanic import Request, Sanic

from inferd.errors import ApiError
from inferd.plugins.base import (
    ConfigPath,
    Generation,
    ParsedRequest,
    Plugin,
    PluginConfig,
    app_metrics,
)


class Price(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: float = Field(0.0, ge=0)  # USD per million prompt tokens
    completion: float = Field(0.0, ge=0)  # USD per million generated tokens


class CostConfig(PluginConfig):
    prices: dict[str, Price] = Field(default_factory=dict)  # by configured model name
    default_price: Price = Price()
    budget_usd: float | None = Field(None, gt=0)  # per caller; None: no limit
    ledger: ConfigPath | None = None


def append_line(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as ledger:
        ledger.write(line + "\n")


class CostPlugin(Plugin):
    name = "cost"
    Config = CostConfig
    config: CostConfig

    def __init__(self, config: CostConfig | None = None) -> None:
        super().__init__(config)
        self.spent: defaultdict[str, float] = defaultdict(float)

    def setup(self, app: Sanic) -> None:
        metrics = app_metrics(app)
        self.usd = metrics.counter("cost_usd", "Cost of generations in USD", ["model"])
        self.tokens = metrics.counter("cost_tokens", "Tokens priced", ["model", "kind"])

    def transform_request(self, request: Request, parsed: ParsedRequest) -> None:
        budget = self.config.budget_usd
        caller = parsed.owner or "anonymous"
        if budget is not None and self.spent[caller] >= budget:
            raise ApiError(f"budget of {budget} USD used up", status=402)

    async def on_finished(self, generation: Generation) -> None:
        stats = generation.stats
        price = self.config.prices.get(generation.model, self.config.default_price)
        usd = (stats.prompt_tokens * price.prompt + stats.generated_tokens * price.completion) / 1e6
        caller = generation.owner or "anonymous"
        self.spent[caller] += usd
        self.usd.labels(generation.model).inc(usd)
        self.tokens.labels(generation.model, "prompt").inc(stats.prompt_tokens)
        self.tokens.labels(generation.model, "completion").inc(stats.generated_tokens)
        if self.config.ledger is not None:
            entry = {
                "time": time.time(),
                "caller": caller,
                "model": generation.model,
                "endpoint": generation.endpoint,
                "session_id": generation.session_id,
                "prompt_tokens": stats.prompt_tokens,
                "completion_tokens": stats.generated_tokens,
                "finish_reason": stats.finish_reason,
                "usd": usd,
            }
            await asyncio.to_thread(append_line, self.config.ledger, json.dumps(entry))
