"""Shared by the batching tests of both backends: decode alone, or through step_many()."""

from __future__ import annotations

from collections.abc import Sequence

from inferd.backends.base import BatchingBackend, SamplingParams

GREEDY = SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=64)
PROMPTS = ("Once upon a time", "Tom and Sue went to the park", "There was a tree", "Lily had")
TOKENS = 24


def alone(backend: BatchingBackend, prompt: str, params: SamplingParams, n: int) -> list[int]:
    decoding = backend.start(backend.encode_text(prompt), params)
    try:
        return [decoding.step() for _ in range(n)]
    finally:
        decoding.close()


def batched(
    backend: BatchingBackend,
    params: Sequence[SamplingParams],
    joins: Sequence[int],
    lengths: Sequence[int],
) -> list[list[int]]:
    """Decode PROMPTS[i] with params[i] through step_many(), request i joining at step
    joins[i] and closing after lengths[i] tokens, so rows join and leave the batch."""
    decodings = [
        backend.start(backend.encode_text(p), q) for p, q in zip(PROMPTS, params, strict=False)
    ]
    out: list[list[int]] = [[] for _ in decodings]
    step = 0
    while any(len(tokens) < n for tokens, n in zip(out, lengths, strict=False)):
        active = [i for i, t in enumerate(out) if joins[i] <= step and len(t) < lengths[i]]
        for i, token in zip(active, backend.step_many([decodings[i] for i in active]), strict=True):
            out[i].append(token)
            if len(out[i]) == lengths[i]:
                decodings[i].close()
        step += 1
    return out
