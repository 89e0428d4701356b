"""OpenAI's wire format, both ways: request bodies for an upstream, and what it answers.

inferd always asks for a stream (`stream: true`, with the usage in its last chunk), so
tokens reach the client as the upstream makes them. Failures are sorted here into what
the client is told: 400 when the upstream rejected the request itself (another upstream
would too), 502 when it failed or answered nonsense, 503 when it is unreachable or
overloaded, 504 when it took longer than the model's `timeout`; and whether another
upstream may be tried.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import httpx

from inferd.backends.base import ChatMessage, FinishReason, SamplingParams

# A completion's text, or a chat's messages (the upstream applies its chat template).
Prompt = str | list[ChatMessage]


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    path: str  # under the upstream's base URL: "/completions" or "/chat/completions"
    body: dict[str, Any]


def request_for(
    model: str,
    prompt: Prompt,
    params: SamplingParams,
    *,
    context_length: int,
    extensions: bool,
) -> UpstreamRequest:
    """The streaming request that asks `model` upstream for this generation."""
    body: dict[str, Any] = {
        "model": model,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": params.temperature,
        "top_p": params.top_p,
    }
    # A budget past the context means "until the context ends": the upstream's default,
    # and some upstreams refuse a max_tokens larger than their context.
    if params.max_tokens < context_length:
        body["max_tokens"] = params.max_tokens
    if params.stop:
        body["stop"] = list(params.stop)
    if params.seed is not None:
        body["seed"] = params.seed
    if params.presence_penalty:
        body["presence_penalty"] = params.presence_penalty
    if params.frequency_penalty:
        body["frequency_penalty"] = params.frequency_penalty
    if extensions:  # not OpenAI's: sent only when they ask for something
        if params.top_k > 0:
            body["top_k"] = params.top_k
        if params.repeat_penalty != 1.0:
            body["repetition_penalty"] = params.repeat_penalty
        if params.min_p:
            body["min_p"] = params.min_p
    if isinstance(prompt, str):
        return UpstreamRequest("/completions", {**body, "prompt": prompt})
    messages = [{"role": m.role, "content": m.content} for m in prompt]
    return UpstreamRequest("/chat/completions", {**body, "messages": messages})


@dataclass(frozen=True, slots=True)
class Chunk:
    """One streamed chunk, reduced to what inferd uses."""

    text: str = ""
    finish_reason: FinishReason | None = None
    prompt_tokens: int | None = None  # the usage, when this chunk carries it
    completion_tokens: int | None = None

    @property
    def says_something(self) -> bool:
        """More than a role announcement: text, an end, or the usage."""
        return bool(self.text) or self.finish_reason is not None or self.prompt_tokens is not None


class UpstreamFailure(Exception):
    """What went wrong with one upstream, as the client will be told."""

    def __init__(self, status: int, reason: str, *, retry: bool, code: str | None = None) -> None:
        super().__init__(reason)
        self.status = status  # 400, 502, 503 or 504
        self.reason = reason  # completes "upstream <url> ..."
        self.retry = retry  # another upstream may answer
        self.code = code  # the upstream's OpenAI error code for a rejected request


def _finish_reason(value: Any) -> FinishReason | None:
    if value is None:
        return None
    if value in ("length", "content_filter"):
        return value
    return "stop"  # "stop", "eos", "tool_calls", ...: the answer is complete


def _count(usage: dict[str, Any], key: str) -> int | None:
    value = usage.get(key)
    return value if isinstance(value, int) else None


def read_chunk(data: str) -> Chunk:
    """A `data:` payload of the upstream's stream; UpstreamFailure for an error or nonsense."""
    try:
        payload = json.loads(data)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        raise UpstreamFailure(
            502, f"sent a chunk that is not a JSON object: {data[:200]!r}", retry=True
        )
    if "error" in payload:
        raise UpstreamFailure(502, f"failed: {error_message(payload)}", retry=True)
    text, finish = "", None
    choices = payload.get("choices") or []
    if choices and isinstance(choices[0], dict):
        choice = choices[0]
        delta = choice.get("delta")
        content = delta.get("content") if isinstance(delta, dict) else choice.get("text")
        text = content if isinstance(content, str) else ""
        finish = _finish_reason(choice.get("finish_reason"))
    usage = payload.get("usage")
    if not isinstance(usage, dict):
        return Chunk(text, finish)
    return Chunk(text, finish, _count(usage, "prompt_tokens"), _count(usage, "completion_tokens"))


def error_message(payload: Any) -> str:
    """The message of an error body: OpenAI's, inferd's, FastAPI's or TGI's shape."""
    if isinstance(payload, dict):
        for key in ("error", "detail", "message"):
            value = payload.get(key)
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return value["message"]
            if isinstance(value, str):
                return value
    return json.dumps(payload)[:300]


def error_code(payload: Any) -> str | None:
    """OpenAI's `error.code` of an error body ("context_length_exceeded", ...), if any."""
    error = payload.get("error") if isinstance(payload, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


def failure_of_status(status: int, body: bytes) -> UpstreamFailure:
    """An upstream's answer other than 200."""
    try:
        payload = json.loads(body)
        message, code = error_message(payload), error_code(payload)
    except ValueError:
        message, code = body.decode(errors="replace").strip()[:300] or "no message", None
    said = f"({status}): {message}"
    if status in (400, 413, 422):  # the request itself is wrong: every upstream would say so
        # its code goes on to /v1 clients (vLLM's and inferd's "context_length_exceeded")
        return UpstreamFailure(400, f"rejected the request {said}", retry=False, code=code)
    if status in (401, 403):
        return UpstreamFailure(
            502, f"refused inferd's credentials {said}; check api_key_env", retry=False
        )
    if status == 404:
        return UpstreamFailure(
            502,
            f"does not know the model or route {said}; check upstream_model and url",
            retry=False,
        )
    if status in (429, 503):
        return UpstreamFailure(503, f"is overloaded {said}", retry=True)
    return UpstreamFailure(502, f"failed {said}", retry=status >= 500)


def failure_of_error(error: Exception, timeout: float) -> UpstreamFailure:
    """A transport failure (or our own timeout) while talking to an upstream."""
    if isinstance(error, (httpx.TimeoutException, asyncio.TimeoutError, TimeoutError)):
        return UpstreamFailure(504, f"did not answer within {timeout:g} s", retry=True)
    detail = str(error) or type(error).__name__
    if isinstance(error, httpx.ConnectError):
        return UpstreamFailure(503, f"cannot be reached ({detail})", retry=True)
    if isinstance(error, (httpx.RemoteProtocolError, httpx.ReadError)):
        return UpstreamFailure(502, f"closed the connection ({detail})", retry=True)
    return UpstreamFailure(502, f"failed ({type(error).__name__}: {detail})", retry=True)
