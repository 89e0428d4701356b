"""Request bodies of the OpenAI-compatible routes, validated with pydantic.

Names, ranges and defaults are OpenAI's. inferd's extras ride along as extra body fields,
as the `openai` client's `extra_body` sends them: `top_k`, `repetition_penalty`,
`min_p`, `device`, and on chat `session_id`. Validation is as strict as on API.md's routes
(unknown fields are rejected by name), with the leniency real clients need: an integer
may come as an integral float (`5.0`, as JavaScript and some SDKs write it), and the
fields in NO_OPS are accepted and ignored, since honouring them would change nothing
here. A parameter inferd cannot honour is a 400 that names it, never silently ignored;
its "off" value (`n: 1`, `logprobs: false`, `tools: []`, ...) is accepted, because many
clients send those explicitly.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from inferd.backends.base import SamplingParams
from inferd.errors import BadRequest
from inferd.openai.messages import Message, check_messages
from inferd.schemas import SEED_MAX, SESSION_ID_PATTERN

# No max_tokens on a chat: answer until the end of sequence or of the context window
# (the engine caps every budget at the room the context leaves).
UNTIL_CONTEXT = 2**31 - 1
# OpenAI's default max_tokens for /v1/completions.
COMPLETION_MAX_TOKENS = 16
# OpenAI takes any 64-bit seed; inferd's generators take 0..SEED_MAX (API.md's range).
SEED_MIN = -(2**63)
# Chat fields accepted and ignored (the README lists them): hints for OpenAI's caches,
# abuse monitoring, storage, billing tier and reasoning models, none of which apply.
NO_OPS = (
    "prompt_cache_key",
    "safety_identifier",
    "metadata",
    "store",
    "service_tier",
    "reasoning_effort",
    "verbosity",
)

# Parameter -> (the values that ask for nothing inferd lacks, why others are refused).
# `null` is always accepted: it means "not set".
_CHAT_ONLY: dict[str, tuple[tuple[Any, ...], str]] = {
    "logprobs": ((False,), "inferd does not return log probabilities"),
    "top_logprobs": ((0,), "inferd does not return log probabilities"),
    "tools": (([],), "inferd does not call tools"),
    "tool_choice": (("none",), "inferd does not call tools"),
    "functions": (([],), "inferd does not call functions"),
    "function_call": (("none",), "inferd does not call functions"),
    "response_format": (({"type": "text"},), "inferd does not constrain output to a format"),
    "modalities": ((["text"],), "inferd generates text only"),
    "audio": ((), "inferd generates text only"),
    "prediction": ((), "inferd has no predicted outputs"),
    "web_search_options": ((), "inferd does not search the web"),
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


def integral(value: Any) -> Any:
    """An integral float (`5.0`) as the int it means; anything else unchanged."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _is_off(value: Any, off_values: tuple[Any, ...]) -> bool:
    # Compare types too: `True == 1`, but `n: true` is not `n: 1` (while `n: 1.0` is).
    value = integral(value)
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
    include_obfuscation: bool | None = Field(
        None, description="accepted and ignored: inferd pads no chunks"
    )


class _Sampling(_Body):
    """The sampling fields both routes share, with OpenAI's defaults."""

    model: str = Field(min_length=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: str | Annotated[list[str], Field(max_length=16)] | None = None
    seed: int | None = Field(
        None, ge=SEED_MIN, le=SEED_MAX, description="a negative seed s is used as s + 2**63"
    )
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, description="accepted for compatibility; unused")
    # inferd's extras (send them with the openai client's `extra_body`)
    top_k: int = Field(0, ge=-1, description="0 or -1: off")
    repetition_penalty: float = Field(1.0, gt=0.0, le=2.0, description="1.0: off")
    min_p: float = Field(0.0, ge=0.0, le=1.0, description="0: off")
    device: str | None = Field(None, description="cpu, cuda or metal; the model's default if unset")
    # Declared with only their "off" values, so the schema says what is accepted;
    # refuse_unsupported() has already refused the others with a message saying why.
    n: Literal[1] | None = None
    logit_bias: _Empty | None = None

    @field_validator(
        "max_tokens",
        "max_completion_tokens",
        "seed",
        "top_k",
        "n",
        "best_of",
        "top_logprobs",
        mode="before",
        check_fields=False,  # some are declared by one subclass only
    )
    @classmethod
    def _integral(cls, value: Any) -> Any:
        return integral(value)

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
            min_p=self.min_p,
            stop=tuple(stops),
            seed=self.backend_seed,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
        )

    @property
    def backend_seed(self) -> int | None:
        """The seed as inferd's generators take it (0..2**63-1).

        A negative seed is moved up by 2**63 rather than passed on: torch would take -5
        as 2**64-5, but the MLX backend seeds Python's `random.Random`, which takes -5
        as 5. Moved up, seeds within +-2**62 never share a stream."""
        if self.seed is None or self.seed >= 0:
            return self.seed
        return self.seed + 2**63


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
    parallel_tool_calls: bool | None = Field(None, description="accepted and ignored")
    response_format: TextFormat | None = None
    modalities: Annotated[list[Literal["text"]], Field(min_length=1, max_length=1)] | None = None
    audio: None = None
    prediction: None = None
    web_search_options: None = None
    # NO_OPS: accepted and ignored.
    prompt_cache_key: str | None = Field(None, description="accepted and ignored")
    safety_identifier: str | None = Field(None, description="accepted and ignored")
    metadata: dict[str, str] | None = Field(None, description="accepted and ignored")
    store: bool | None = Field(None, description="accepted and ignored: nothing is stored")
    service_tier: str | None = Field(None, description="accepted and ignored: one tier")
    reasoning_effort: str | None = Field(None, description="accepted and ignored")
    verbosity: str | None = Field(None, description="accepted and ignored")

    def check(self) -> None:
        super().check()
        check_messages(self.messages)
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
