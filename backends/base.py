"""The Backend protocol and the plain data types that cross it.

A backend owns one loaded model on one device. Everything here is called from the
model-owner thread of inferd's engine, never from the event loop: a backend may block.
The engine (inferd/engine.py) does the generic work around it -- end-of-sequence,
token budgets, stop sequences, detokenisation and cancellation -- so a backend only
turns prompts into ids and produces next tokens.

A backend produces tokens in one of two ways:
- a ContinuousBackend hands the engine a Batcher: sequences join it and leave it, and
  each step() advances all of them by one forward pass (the torch backend: scheduler,
  paged KV cache and chunked prefill; the MLX backend: mlx-lm's batch caches, chunked
  prefill and its prompt cache);
- a DecodingBackend starts one Decoding per request, which the engine steps in turn
  (the test fakes).
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
    # min-p: tokens less likely than min_p times the likeliest one are dropped (0: off)
    min_p: float = 0.0


# Tokens the presence and frequency penalties look back over (prompt included), as
# llama.cpp's penalty_last_n and mlx-lm's *_context_size do.
OCCURRENCE_WINDOW = 64


# Temperatures below this are greedy, in every backend (as in vLLM): dividing logits by a
# tinier one overflows to inf and NaN.
GREEDY_BELOW = 1e-5


# A sampling row whose logits hold NaN or inf ends its own request with this message.
NON_FINITE_SCORES = "the model produced non-finite scores (NaN or inf) for this request"


def check_params(params: SamplingParams) -> None:
    """Raise a BackendError naming every out-of-range value."""
    problems = []
    if not params.temperature >= 0:  # also catches NaN
        problems.append(f"temperature must be >= 0, got {params.temperature}")
    if params.top_k < 0:
        problems.append(f"top_k must be >= 0 (0 disables it), got {params.top_k}")
    if not 0 < params.top_p <= 1:
        problems.append(f"top_p must be in (0, 1], got {params.top_p}")
    if not 0 <= params.min_p <= 1:
        problems.append(f"min_p must be in [0, 1] (0 disables it), got {params.min_p}")
    if not params.repeat_penalty > 0:
        problems.append(
            f"repeat_penalty must be > 0 (1.0 disables it), got {params.repeat_penalty}"
        )
    if problems:
        raise BackendError("invalid sampling parameters: " + "; ".join(problems))


def is_greedy(params: SamplingParams) -> bool:
    return params.temperature < GREEDY_BELOW


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """A batching engine's knobs (config.toml documents each; None means the default).

    The torch engine uses all of them; MLX uses the token budgets and cache sizes.
    """

    threads: int | None = None  # CPU intra-op threads; default: physical cores
    kv_cache_tokens: int = 65536  # token positions in the KV cache, all sequences together
    prefix_cache_tokens: int | None = None  # kept for reuse after release; None: no bound
    max_batch_tokens: int = 64  # tokens per step while sequences decode
    max_prefill_tokens: int = 512  # tokens per step when nothing decodes
    # a step with a long prompt's chunk vs the decodes alone; None: the engine's default
    # (2 on both engines)
    prefill_slowdown: float | None = None
    block_size: int = 16  # token positions per KV cache block (torch)
    compile: bool | None = None  # torch: compile the steps; None: CPU models of 100M+


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the engine needs to know about a loaded model."""

    context_length: int
    eos_token_ids: frozenset[int]
    has_chat_template: bool
    quantization: str | None = None  # the weight format in use ("int8", "bf16", ...)


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


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one step did for one sequence: its next token, or the error that ended it."""

    seq_id: int
    token: int | None = None
    error: Exception | None = None


class Batcher(Protocol):
    """Continuous batching over one loaded model, driven by the engine's owner thread.

    Sequences join with add() and leave with finish(); each step() runs one forward pass
    for whatever the batcher schedules. A sequence gets at most one token per step and
    none while its prompt is still being computed. An error confined to one sequence
    (a bad token id, a numeric failure in its row) ends that sequence alone.
    """

    def add(self, seq_id: int, prompt_ids: Sequence[int], params: SamplingParams) -> None:
        """Queue a sequence; raises (BackendError) when it can never run, e.g. too long."""
        ...

    def step(self) -> list[StepResult]:
        """Run one step; results only for sequences that got a token or failed."""
        ...

    def finish(self, seq_id: int) -> None:
        """Drop a sequence (done, cancelled or failed) and free its cache; idempotent."""
        ...


class Decoding(Protocol):
    """One in-flight generation inside a backend: holds its KV cache and sampler state."""

    def step(self) -> int:
        """Run the model once (the prefill on the first call) and return the next token id."""
        ...

    def close(self) -> None:
        """Free the cache; called exactly once, also when the request is cancelled."""
        ...


class Backend(Protocol):
    """A model loaded on one device: tokenizer side. Generation is below."""

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


class ContinuousBackend(Backend, Protocol):
    """A backend that schedules and batches its sequences itself."""

    def batcher(self, max_running: int) -> Batcher:
        """The batcher the engine drives (called once, on the owner thread, after load)."""
        ...


class DecodingBackend(Backend, Protocol):
    """A backend with one Decoding per request, stepped in turn by inferd/decodings.py."""

    def start(self, prompt_ids: Sequence[int], params: SamplingParams) -> Decoding:
        """Begin a generation; the model runs on the returned object's first step()."""
        ...
