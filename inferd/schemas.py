"""Request bodies of the API, validated with pydantic.

Field names, defaults and ranges follow API.md exactly; the chat API really uses
kebab-case (`model-name`, `max-token`, ...). Validation is strict -- "5" is not an
integer and unknown fields are rejected by name -- because a silently ignored typo
(`max_token` on the chat route) is worse than a 400.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inferd.backends.base import SamplingParams
from inferd.errors import BadRequest

# Seeds feed 64-bit generators (torch.Generator, mx.random.seed).
SEED_MAX = 2**63 - 1
SESSION_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, populate_by_name=False)


class CompletionRequest(_Body):
    model: str = Field(min_length=1)
    prompt: str = Field(min_length=1)
    max_tokens: int = Field(128, ge=1)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    stop: list[str] = Field(default_factory=list, max_length=16)
    stream: bool = False
    # Extensions beyond API.md (documented in the README).
    # Any string: the registry answers an unknown device with the devices this server has.
    device: str | None = None
    seed: int | None = Field(None, ge=0, le=SEED_MAX)
    min_p: float = Field(0.0, ge=0.0, le=1.0)  # 0: off

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=0,
            repeat_penalty=1.0,
            stop=tuple(self.stop),
            seed=self.seed,
            min_p=self.min_p,
        )


class ChatRequest(_Body):
    model_name: str = Field(alias="model-name", min_length=1)
    prompt: str = Field(min_length=1)
    session_id: str | None = Field(None, alias="session-id", pattern=SESSION_ID_PATTERN)
    max_token: int = Field(512, alias="max-token", ge=1)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.95, alias="top-p", gt=0.0, le=1.0)
    top_k: int = Field(40, alias="top-k", ge=0)
    repeat_penalty: float = Field(1.1, alias="repeat-penalty", ge=1.0, le=2.0)
    system_prompt: str | None = Field(None, alias="system-prompt")
    stop: list[str] = Field(default_factory=list, max_length=16)
    # Any string: the registry answers an unknown device with the devices this server has.
    device: str | None = None
    seed: int | None = Field(None, ge=0, le=SEED_MAX)
    min_p: float = Field(0.0, alias="min-p", ge=0.0, le=1.0)  # 0: off

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            max_tokens=self.max_token,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            repeat_penalty=self.repeat_penalty,
            stop=tuple(self.stop),
            seed=self.seed,
            min_p=self.min_p,
        )


class RollbackRequest(_Body):
    amount: int = Field(1, ge=1)


# Session extensions beyond API.md (documented in the README).
TITLE_MAX = 200


class ForkRequest(_Body):
    keep: int | None = Field(None, ge=0)  # None: every message


class RenameRequest(_Body):
    title: str | None = Field(max_length=TITLE_MAX)  # None: back to the default title


class StoredMessage(_Body):
    role: Literal["system", "user", "assistant"]
    content: str


class ImportRequest(_Body):
    messages: list[StoredMessage]
    title: str | None = Field(None, max_length=TITLE_MAX)


_Model = TypeVar("_Model", bound=BaseModel)


def _describe(error: dict[str, Any]) -> str:
    field = ".".join(str(part) for part in error["loc"]) or "body"
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"unknown field '{field}'"
    if kind == "missing":
        return f"missing required field '{field}'"
    message = error["msg"][0].lower() + error["msg"][1:]
    return f"invalid '{field}': {message} (got {error['input']!r})"


def parse_body(model: type[_Model], body: Any) -> _Model:
    """Validate a decoded JSON body, turning every problem into one 400 message."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    try:
        return model.model_validate(body, by_alias=True, by_name=False)
    except ValidationError as error:
        problems = error.errors()
        raise BadRequest(
            "; ".join(_describe(item) for item in problems),
            param=".".join(str(part) for part in problems[0]["loc"]) or None,
        ) from None
