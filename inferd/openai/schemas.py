"""Request bodies of the OpenAI-compatible routes, validated with pydantic.

Names, ranges and defaults are OpenAI's. inferd's extras ride along as extra body fields,
as the `openai` client's `extra_body` sends them: `top_k`, `repetition_penalty`,
`device`, and on chat `session_id`. Validation is as strict as on API.md's routes
(unknown fields are rejected by name). A parameter inferd cannot honour is a 400 that
names it, never silently ignored; its "off" value (`n: 1`, `logprobs: false`,
`tools: []`, ...) is accepted, because many clients send those explicitly.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from inferd.backends.base import ChatMessage, SamplingParams
from inferd.errors import BadRequest
from inferd.schemas import SEED_MAX, SESSION_ID_PATTERN

# No max_tokens on a chat: answer until the end of sequence or of the context window
# (the engine caps every budget at the room the context leaves).
UNTIL_CONTEXT = 2**31 - 1
# OpenAI's default max_tokens for /v1/completions.
COMPLETION_MAX_TOKENS = 16

# Parameter -> (the values that ask for nothing inferd lacks, why others are refused).
# `null` is always accepted: it means "not set".
_CHAT_ONLY: dict[str, tuple[tuple[Any, ...], str]] = {
    "logprobs": ((False,), "inferd does not return log probabilities"),
    "top_logprobs": ((0,), "inferd does not return log probabilities"),
    "tools": (([],), "inferd does not call tools"),
    "tool_choice": (("none",), "inferd does not call tools"),
    "functions": (([],), "inferd does not call functions"),
    "function_call": (("none",), "inferd does not call functions"),
    "parallel_tool_calls": ((True, False), ""),
    "response_format": (({"type": "text"},), "inferd does not constrain output to a format"),
    "modalities": ((["text"],), "inferd generates text only"),
    "audio": ((), "inferd generates text only"),
    "prediction": ((), "inferd has no predicted outputs"),
    "reasoning_effort": ((), "inferd has no reasoning-effort control"),
    "web_search_options": ((), "inferd does not search the web"),
    "store": ((False,), "inferd does not store completions for OpenAI's tools"),
    "metadata": (({},), "inferd does not store completions for OpenAI's tools"),
    "service_tier": (("auto", "default"), "inferd has one service tier"),
}
_COMPLETION_ONLY: dict[str, tuple[tuple[Any, ...], str]] = {
    "best_of": ((1,), "inferd generates one completion per request"),
    "logprobs": ((), "inferd does not return log probabilities"),
    "echo": ((False,), "inferd does not echo the prompt"),
    "suffix": ((), "inferd does not insert text before a suffix"),
}
_BOTH: dict[str, tuple[tuple[Any, ...], str]] = {
    "n": ((1,), "inferd generates one choice per request"),
    "logit_bias": (({},), "inferd does not apply logit biases"),
}
CHAT_UNSUPPORTED = {**_BOTH, **_CHAT_ONLY}
COMPLETION_UNSUPPORTED = {**_BOTH, **_COMPLETION_ONLY}


def _is_off(value: Any, off_values: tuple[Any, ...]) -> bool:
    # Compare types too: `True == 1`, but `n: true` is not `n: 1`.
    return value is None or any(value == v and type(value) is type(v) for v in off_values)


def refuse_unsupported(body: Any, table: dict[str, tuple[tuple[Any, ...], str]]) -> None:
    """400 naming the first parameter in `body` that asks for something inferd lacks."""
    if not isinstance(body, dict):
        return
    for name, (off_values, reason) in table.items():
        if name in body and not _is_off(body[name], off_values):
            accepted = ", ".join(repr(v) for v in off_values) or "nothing"
            raise BadRequest(
                f"unsupported parameter '{name}' (got {body[name]!r}): {reason}; "
                f"inferd accepts only null or {accepted} here",
                param=name,
            )


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


# The only accepted values of some unsupported parameters: nothing.
_None = Annotated[list[Any], Field(max_length=0)]
_Empty = Annotated[dict[str, Any], Field(max_length=0)]


class TextFormat(_Body):
    type: Literal["text"]


class StreamOptions(_Body):
    include_usage: bool | None = Field(
        None,
        description="true: one more chunk with empty `choices` and the usage (OpenAI's way); "
        "false: no usage; unset: the usage rides on the last chunk (inferd's default).",
    )


class TextPart(_Body):
    type: Literal["text"]
    text: str


class Message(_Body):
    """A chat message; `developer` is OpenAI's newer name for `system`."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def to_chat(self) -> ChatMessage:
        role = "system" if self.role == "developer" else self.role
        text = (
            self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        )
        return ChatMessage(role, text)


class _Sampling(_Body):
    """The sampling fields both routes share, with OpenAI's defaults."""

    model: str = Field(min_length=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: str | Annotated[list[str], Field(max_length=16)] | None = None
    seed: int | None = Field(None, ge=0, le=SEED_MAX)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, description="accepted for compatibility; unused")
    # inferd's extras (send them with the openai client's `extra_body`)
    top_k: int = Field(0, ge=-1, description="0 or -1: off")
    repetition_penalty: float = Field(1.0, gt=0.0, le=2.0, description="1.0: off")
    device: str | None = Field(None, description="cpu, cuda or metal; the model's default if unset")
    # Declared with only their "off" values, so the schema says what is accepted;
    # refuse_unsupported() has already refused the others with a message saying why.
    n: Literal[1] | None = None
    logit_bias: _Empty | None = None

    def check(self) -> None:
        """What the field types cannot say: 400s naming the parameter."""
        if self.stream_options is not None and not self.stream:
            raise BadRequest(
                "'stream_options' is only allowed when 'stream' is true", param="stream_options"
            )

    def sampling(self, max_tokens: int) -> SamplingParams:
        stops = [self.stop] if isinstance(self.stop, str) else self.stop or []
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=max(self.top_k, 0),
            repeat_penalty=self.repetition_penalty,
            stop=tuple(stops),
            seed=self.seed,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
        )


class TextCompletionRequest(_Sampling):
    """POST /v1/completions."""

    prompt: str | list[str] = Field(description="a string, or a list holding one string")
    max_tokens: int = Field(COMPLETION_MAX_TOKENS, ge=1)
    best_of: Literal[1] | None = None
    logprobs: None = None
    echo: Literal[False] | None = None
    suffix: None = None

    def check(self) -> None:
        super().check()
        if isinstance(self.prompt, list) and len(self.prompt) != 1:
            raise BadRequest(
                f"'prompt' must be a string or a list of one string, got a list of "
                f"{len(self.prompt)}: inferd completes one prompt per request",
                param="prompt",
            )
        if not self.text:
            raise BadRequest("'prompt' must not be empty", param="prompt")

    @property
    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class ChatCompletionRequest(_Sampling):
    """POST /v1/chat/completions."""

    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, description="deprecated by OpenAI")
    max_completion_tokens: int | None = Field(None, ge=1)
    session_id: str | None = Field(
        None,
        pattern=SESSION_ID_PATTERN,
        description="inferd's server-side session: `messages` is the new turn only",
    )
    logprobs: Literal[False] | None = None
    top_logprobs: Literal[0] | None = None
    tools: _None | None = None
    tool_choice: Literal["none"] | None = None
    functions: _None | None = None
    function_call: Literal["none"] | None = None
    parallel_tool_calls: bool | None = None
    response_format: TextFormat | None = None
    modalities: Annotated[list[Literal["text"]], Field(min_length=1, max_length=1)] | None = None
    audio: None = None
    prediction: None = None
    reasoning_effort: None = None
    web_search_options: None = None
    store: Literal[False] | None = None
    metadata: _Empty | None = None
    service_tier: Literal["auto", "default"] | None = None

    def check(self) -> None:
        super().check()
        both = (self.max_tokens, self.max_completion_tokens)
        if None not in both and both[0] != both[1]:
            raise BadRequest(
                f"'max_tokens' ({both[0]}) and 'max_completion_tokens' ({both[1]}) disagree; "
                "send one of them",
                param="max_completion_tokens",
            )

    @property
    def budget(self) -> int:
        return self.max_completion_tokens or self.max_tokens or UNTIL_CONTEXT
