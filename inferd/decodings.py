"""A Batcher over a DecodingBackend: one Decoding per sequence, stepped in turn.

Backends that start one Decoding per request (MLX, the test fakes) get the engine's
batching from here: every step advances each sequence by one token, in the order they
joined, so a long answer never starves a short one. With the optional step_many() the
step is one call for all of them, which the backend may run as one forward pass (a
failure there fails them all: their caches are suspect); without it, or when
batch_steps is False, each Decoding steps alone and a failure stays with its sequence.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from inferd.backends.base import Decoding, DecodingBackend, SamplingParams, StepResult

log = logging.getLogger("inferd.engine")


class DecodingBatcher:
    def __init__(self, backend: DecodingBackend, *, batch_steps: bool = True) -> None:
        self._backend = backend
        self._step_many = getattr(backend, "step_many", None) if batch_steps else None
        self._decodings: dict[int, Decoding] = {}

    def add(self, seq_id: int, prompt_ids: Sequence[int], params: SamplingParams) -> None:
        self._decodings[seq_id] = self._backend.start(prompt_ids, params)

    def finish(self, seq_id: int) -> None:
        decoding = self._decodings.pop(seq_id, None)
        if decoding is not None:
            decoding.close()

    def step(self) -> list[StepResult]:
        if self._step_many is not None and len(self._decodings) > 1:
            return self._step_together()
        results = []
        for seq_id, decoding in list(self._decodings.items()):
            try:
                results.append(StepResult(seq_id, token=decoding.step()))
            except Exception as error:  # one failing request must not stop the others
                log.exception("a generation step failed")
                results.append(StepResult(seq_id, error=error))
        return results

    def _step_together(self) -> list[StepResult]:
        ids = list(self._decodings)
        try:
            tokens = self._step_many([self._decodings[i] for i in ids])
        except Exception as error:
            # A batched forward pass fails as a whole (out of memory, a model bug): the
            # caches of all its sequences are suspect, so all of them end with the error.
            log.exception("a batched generation step failed")
            return [StepResult(i, error=error) for i in ids]
        return [StepResult(i, token=t) for i, t in zip(ids, tokens, strict=True)]
