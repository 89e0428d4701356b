"""A Batcher over a DecodingBackend: one Decoding per sequence, stepped in turn.

Backends that start one Decoding per request (the test fakes; any simple backend) get
the engine's batching from here: every step advances each sequence by one token, in
the order they joined, so a long answer never starves a short one. Each Decoding runs
its own forward passes, so a failure stays with its sequence.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from inferd.backends.base import Decoding, DecodingBackend, SamplingParams, StepResult

log = logging.getLogger("inferd.engine")


class DecodingBatcher:
    def __init__(self, backend: DecodingBackend) -> None:
        self._backend = backend
        self._decodings: dict[int, Decoding] = {}

    def add(self, seq_id: int, prompt_ids: Sequence[int], params: SamplingParams) -> None:
        self._decodings[seq_id] = self._backend.start(prompt_ids, params)

    def finish(self, seq_id: int) -> None:
        decoding = self._decodings.pop(seq_id, None)
        if decoding is not None:
            decoding.close()

    def step(self) -> list[StepResult]:
        results = []
        for seq_id, decoding in list(self._decodings.items()):
            try:
                results.append(StepResult(seq_id, token=decoding.step()))
            except Exception as error:  # one failing request must not stop the others
                log.exception("a generation step failed")
                results.append(StepResult(seq_id, error=error))
        return results
