"""Response bodies of API.md's routes.

The routes build their JSON replies through these models, and /openapi.json describes
the replies with the same models, so the published document cannot drift from what is
sent. Optional fields that a reply leaves out are excluded rather than sent as null.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from inferd.backends.base import CompletedReason


def _unset(value: object) -> bool:
    return value is None


class _Reply(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorReply(_Reply):
    """Every failure on API.md's routes."""

    error: str


class HealthReply(_Reply):
    status: Literal["ok"] = "ok"
    uptime: Literal["running"] = "running"
    uptime_seconds: float
    timestamp: str = Field(description="UTC, ISO 8601")


class ReadinessReply(_Reply):
    """200 when every preloaded model is ready; 503 while loading, after a failure, or
    while the server drains for a shutdown."""

    status: Literal["ready", "loading", "failed", "draining"]
    models_available: int = Field(description="models loaded on at least one device")
    timestamp: str
    loading: list[str] | None = Field(None, exclude_if=_unset, description="while loading")
    errors: dict[str, str] | None = Field(
        None,
        exclude_if=_unset,
        description="model@device -> 'failed to load' (the reason is in the server log)",
    )


class ModelsReply(_Reply):
    models: list[str]


class ModelDetail(_Reply):
    id: str
    name: str
    context_length: int | None
    quantization: str | None
    device: str = Field(description="the device a request gets when it names none")
    loaded_devices: list[str]


class CompletionReply(_Reply):
    text: str
    model: str
    tokens: int = Field(description="generated tokens")
    prompt_tokens: int
    finish_reason: CompletedReason


class HistoryMessage(_Reply):
    role: Literal["system", "user", "assistant"]
    content: str


class RollbackReply(_Reply):
    status: Literal["ok"] = "ok"
    remaining: int = Field(description="messages left in the session")


class SessionDetail(_Reply):
    """A session's metadata (an inferd extension: the web page's sidebar and branches)."""

    id: str
    title: str | None = Field(
        description="the renamed title, else the first user message on one line, else null"
    )
    created: str = Field(description="UTC, ISO 8601")
    updated: str = Field(description="UTC, ISO 8601: the last change to the messages")
    message_count: int
    parent: str | None = Field(description="the session this one was forked from")
    fork_point: int | None = Field(description="how many of the parent's messages it began with")
