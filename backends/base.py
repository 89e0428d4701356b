"""The Backend protocol and the plain data types that cross it.

A backend owns one loaded model on one device. Everything here is called from the
model-owner thread of inferd's engine, never from the event loop: a backend may block.
The engine (inferd/engine.py) does the generic work around it -- end-of-sequence,
token budgets, stop sequences, detokenisation and cancellation -- so a backend only
turns prompts into ids and produces one next token per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

Device = Literal["cpu", "cuda", "metal"]
# "content_filter": a plugin ended the generation (inferd/plugins/base.py, Generation.stop).
FinishReason = Literal["stop", "length", "cancelled", "error", "content_filter"]
# How an answer the client received whole ended: what replies report as finish_reason
# ("content_filter": a plugin's output transform ended it, see docs/plugins.md).
CompletedReason = Literal["stop", "length", "content_filter"]


class BackendError(Exception):
    """A backend could not do what was asked (load failure, bad model files, ...)."""


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How the next token is chosen. temperature 0 means greedy decoding."""

    max_tokens: int = 128
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40  # 0 disables top-k
    repeat_penalty: float = 1.0  # 1.0 disables the penalty
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # OpenAI's additive penalties (0 disables them), over the last OCCURRENCE_WINDOW
    # tokens: presence once per token seen there, frequency once per occurrence.
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


# Tokens the presence and frequency penalties look back over (prompt included), as
# llama.cpp's penalty_last_n and mlx-lm's *_context_size do.
OCCURRENCE_WINDOW = 64


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the engine needs to know about a loaded model."""

    context_length: int
    eos_token_ids: frozenset[int]
    has_chat_template: bool


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(slots=True)
class GenerationStats:
    """Counts and timings of one finished generation (seconds are monotonic clock)."""

    prompt_tokens: int = 0
    generated_tokens: int = 0
    queued_at: float = 0.0
    started_at: float = 0.0
    first_token_at: float | None = None
    finished_at: float | None = None
    finish_reason: FinishReason | None = None


@dataclass(frozen=True, slots=True)
class TokenEvent:
    """One step of a stream: new text (possibly empty), or the end of the stream."""

    text: str = ""
    token_id: int | None = None
    finish_reason: FinishReason | None = None
    error: str | None = None
    stats: GenerationStats | None = field(default=None, compare=False)


class Decoding(Protocol):
    """One in-flight generation inside a backend: holds its KV cache and sampler state."""

    def step(self) -> int:
        """Run the model once (the prefill on the first call) and return the next token id."""
        ...

    def close(self) -> None:
        """Free the cache; called exactly once, also when the request is cancelled."""
        ...


class Backend(Protocol):
    """A model loaded on one device."""

    def load(self) -> ModelInfo:
        """Load weights and tokenizer (blocking); called once on the owner thread."""
        ...

    def encode_text(self, text: str) -> list[int]:
        """Token ids of a raw completion prompt."""
        ...

    def encode_chat(self, messages: Sequence[ChatMessage]) -> list[int]:
        """Token ids of a conversation, rendered with the model's chat template."""
        ...

    def decode(self, token_ids: Sequence[int]) -> str:
        """Text of token ids (special tokens skipped); used for incremental detokenisation."""
        ...

    def start(self, prompt_ids: Sequence[int], params: SamplingParams) -> Decoding:
        """Begin a generation; the model runs on the returned object's first step()."""
        ...


class BatchingBackend(Backend, Protocol):
    """A backend with the optional batched step; the engine uses it when it is present.

    Without it the engine calls each Decoding's step() in turn: one forward pass per
    sequence per turn. Both built-in backends implement it.
    """

    def step_many(self, decodings: Sequence[Decoding]) -> list[int]:
        """The next token of each decoding (this backend's, from start()), in order.

        The same as calling step() on each, but free to run the decode steps of several
        sequences as one forward pass; each decoding still samples with its own params.
        A raised exception fails the whole call: the engine ends every one of them.
        """
        ...
