"""A guardrail plugin: banned words in prompts and answers, and house rules for requests.

- `transform_request` refuses a prompt with a banned word (400), or masks the word
  (`prompts = "redact"`); it also imposes a system prompt on chats and caps max tokens.
- `transform_output` masks banned words in the answer as it streams -- also a word
  split over several tokens -- or ends the answer before the word (`answers = "stop"`,
  finish_reason "content_filter"). The client and the stored history get the same text.
- Counters in /metrics: refused requests, and masked words by where they were.
- It fails closed: should it raise, the request is refused or the answer ends with an
  error, rather than unchecked text reaching the client.

    [plugins]
    enabled = ["metrics", "auth", "rate_limit", "guardrail"]

    [guardrail]
    banned_words = ["darn", "heck"]
    banned_words_file = "banned.txt"   # one word per line; relative to config.toml
    system_prompt = "You are a polite assistant."
    max_tokens = 512
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from pydantic import Field
from sanic import Request, Sanic

from inferd.errors import BadRequest
from inferd.plugins.base import (
    ConfigPath,
    Generation,
    ParsedRequest,
    Plugin,
    PluginConfig,
    app_metrics,
)
from inferd_guardrails.banned_words import BannedWords, HeldText


class GuardrailConfig(PluginConfig):
    banned_words: list[str] = Field(default_factory=list)
    banned_words_file: ConfigPath | None = None
    mask: str = "****"
    prompts: Literal["refuse", "redact"] = "refuse"
    answers: Literal["redact", "stop"] = "redact"
    system_prompt: str | None = None  # replaces a chat's own system prompt
    max_tokens: int | None = Field(None, ge=1)  # a cap on what a request may ask for


class GuardrailPlugin(Plugin):
    name = "guardrail"
    Config = GuardrailConfig
    config: GuardrailConfig
    failure_mode = "fail_closed"

    def __init__(self, config: GuardrailConfig | None = None) -> None:
        super().__init__(config)
        words = list(self.config.banned_words)
        if self.config.banned_words_file is not None:
            lines = self.config.banned_words_file.read_text(encoding="utf-8").splitlines()
            words += [line.strip() for line in lines if line.strip() and line[0] != "#"]
        self.words = BannedWords(words, self.config.mask)

    def setup(self, app: Sanic) -> None:
        metrics = app_metrics(app)
        self.refused = metrics.counter(
            "guardrail_refused_requests", "Requests refused for a banned word", ["endpoint"]
        )
        self.masked = metrics.counter("guardrail_masked_words", "Banned words masked", ["where"])

    def transform_request(self, request: Request, parsed: ParsedRequest) -> None:
        texts = [parsed.prompt, parsed.system_prompt, *(m.content for m in parsed.messages)]
        if any(text and self.words.search(text) for text in texts):
            if self.config.prompts == "refuse":
                self.refused.labels(parsed.endpoint).inc()
                raise BadRequest("the prompt contains a word this server does not accept")
            if parsed.prompt is not None:
                parsed.prompt = self._masked(parsed.prompt)
            if parsed.system_prompt is not None:
                parsed.system_prompt = self._masked(parsed.system_prompt)
            parsed.messages = [
                dataclasses.replace(message, content=self._masked(message.content))
                for message in parsed.messages
            ]
        if parsed.is_chat and self.config.system_prompt is not None:
            parsed.system_prompt = self.config.system_prompt
        cap = self.config.max_tokens
        if cap is not None and parsed.params.max_tokens > cap:
            parsed.params = dataclasses.replace(parsed.params, max_tokens=cap)

    def _masked(self, text: str) -> str:
        masked, count = self.words.redact(text)
        if count:
            self.masked.labels("prompt").inc(count)
        return masked

    def transform_output(self, generation: Generation, text: str, final: bool) -> str:
        held = generation.state.get("guardrail.held")
        if held is None:
            held = generation.state["guardrail.held"] = HeldText(self.words)
        released, head = held.push(text, final)
        checked = released[head:]  # the head continues a word already let through
        if self.config.answers == "stop":
            found = self.words.search(checked)
            if found is None:
                return released
            generation.stop("content_filter")
            return released[: head + found.start()]
        masked, count = self.words.redact(checked)
        if count:
            self.masked.labels("answer").inc(count)
        return released[:head] + masked
