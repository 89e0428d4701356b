"""The next token of every decoding row of an MLX step at once, each with its own parameters.

mlx-lm does the sampling work: its samplers (make_sampler: temperature, top-p, min-p,
top-k) and logits processors (repetition, presence and frequency penalties). This module decides
which rows may share a call. Greedy rows take one argmax together. Sampled rows with
the same parameters and no seed are sampled together; a seeded row is sampled alone,
right after seeding mlx's generator from its own RNG, so it draws the same numbers alone
or in any batch. The tokens and a per-row "finite" flag stay lazy: the batcher reads
them in the step's one host sync.

Imported lazily (mlx may be missing); runs on the model-owner thread.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import mlx.core as mx
from mlx_lm.sample_utils import LogitsProcessor, Sampler, make_logits_processors, make_sampler

from inferd.backends.base import OCCURRENCE_WINDOW, SamplingParams, check_params, is_greedy

# Tokens the repeat penalty looks back over: llama.cpp's and Ollama's repeat_last_n.
REPEAT_WINDOW = 64
_HISTORY = max(REPEAT_WINDOW, OCCURRENCE_WINDOW)


@dataclass(slots=True)
class RowSampling:
    """One sequence's way of choosing tokens, and the recent ids its penalties read."""

    params: SamplingParams
    sampler: Sampler | None  # None: greedy
    processors: list[LogitsProcessor]
    rng: random.Random | None  # a seeded request's own random stream
    history: list[int] = field(default_factory=list)  # kept only when processors read it

    def accept(self, token: int) -> None:
        if self.processors:
            self.history.append(token)
            if len(self.history) > 4 * _HISTORY:  # the penalties read the last window only
                del self.history[:-_HISTORY]

    @property
    def group(self) -> tuple[float, float, float, int]:
        """Rows with the same key may share one sampler call (when neither is seeded)."""
        params = self.params
        return (params.temperature, params.top_p, params.min_p, params.top_k)


def row_sampling(params: SamplingParams, prompt_ids: Sequence[int], vocab_size: int) -> RowSampling:
    """A sequence's sampling state; raises a BackendError naming any out-of-range value."""
    check_params(params)
    processors = _logits_processors(params)
    sampler = None if is_greedy(params) else _sampler(params, vocab_size)
    rng = random.Random(params.seed) if params.seed is not None and sampler else None
    history = list(prompt_ids[-_HISTORY:]) if processors else []
    return RowSampling(params, sampler, processors, rng, history)


class BatchSampler:
    """Chooses the next id of each row of (rows, vocab) logits."""

    def __init__(self) -> None:
        # Unseeded rows draw from here, so a seeded row's reseeding of mlx's global
        # generator never makes the others predictable.
        self._entropy = random.Random()

    def sample(
        self,
        logits: mx.array,
        rows: Sequence[RowSampling],
        fed: Sequence[mx.array | None] | None = None,
    ) -> tuple[mx.array, mx.array]:
        """(tokens, finite), both lazy and of shape (rows,).

        fed[i], when given, is row i's input of this step not yet in its history (a
        token still being computed): the penalties count it too.
        """
        finite = mx.isfinite(logits.sum(axis=-1))  # any NaN or inf makes the sum so
        if any(row.processors for row in rows):
            fed = fed or [None] * len(rows)
            logits = mx.concatenate(
                [_process(logits[i : i + 1], r, fed[i]) for i, r in enumerate(rows)]
            )
        tokens = mx.argmax(logits, axis=-1)
        sampled = [i for i, row in enumerate(rows) if row.sampler is not None]
        if not sampled:
            return tokens, finite
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        picks: dict[int, mx.array] = {}
        groups: dict[tuple[float, float, float, int], list[int]] = {}
        for i in sampled:
            if rows[i].rng is not None:
                mx.random.seed(rows[i].rng.getrandbits(63))  # type: ignore[union-attr]
                picks[i] = rows[i].sampler(logprobs[i : i + 1])  # type: ignore[misc]
            else:
                groups.setdefault(rows[i].group, []).append(i)
        for members in groups.values():
            mx.random.seed(self._entropy.getrandbits(63))
            drawn = rows[members[0]].sampler(logprobs[mx.array(members)])  # type: ignore[misc]
            picks.update((i, drawn[j : j + 1]) for j, i in enumerate(members))
        order = sorted(picks)
        chosen = mx.concatenate([picks[i] for i in order]).astype(tokens.dtype)
        tokens[mx.array(order)] = chosen
        return tokens, finite


def _process(logits: mx.array, row: RowSampling, fed: mx.array | None) -> mx.array:
    """A (1, vocab) row after its processors (the penalties), which read its recent ids."""
    if row.processors:
        context = mx.array(row.history[-_HISTORY:], dtype=mx.uint32)
        if fed is not None:
            context = mx.concatenate([context, fed.astype(mx.uint32)])
        for processor in row.processors:
            logits = processor(context, logits)
    return logits


def _sampler(params: SamplingParams, vocab_size: int) -> Sampler:
    # mlx-lm rejects top_k >= vocab size; keeping every token is no top-k at all.
    top_k = params.top_k if 0 < params.top_k < vocab_size else 0
    # mlx-lm compares min-p with the probabilities before the temperature; the torch
    # backend (as vLLM) after it. p_i / p_max >= m at temperature t is
    # (p_i / p_max) ** (1 / t) >= m, i.e. p_i / p_max >= m ** t: the same tokens kept.
    min_p = params.min_p**params.temperature if params.min_p else 0.0
    return make_sampler(temp=params.temperature, top_p=params.top_p, min_p=min_p, top_k=top_k)


def _logits_processors(params: SamplingParams) -> list[LogitsProcessor]:
    """mlx-lm's repetition, presence and frequency penalties; [] when all are off."""
    if (params.repeat_penalty, params.presence_penalty, params.frequency_penalty) == (1, 0, 0):
        return []
    return make_logits_processors(
        repetition_penalty=None if params.repeat_penalty == 1.0 else params.repeat_penalty,
        repetition_context_size=REPEAT_WINDOW,
        presence_penalty=params.presence_penalty,
        presence_context_size=OCCURRENCE_WINDOW,
        frequency_penalty=params.frequency_penalty,
        frequency_context_size=OCCURRENCE_WINDOW,
    )
