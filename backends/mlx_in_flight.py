"""The MLX batcher's sequences, and a decode pass whose tokens the host reads a step late.

MlxBatcher (mlx_batcher.py) hands each step's decode pass to MLX and reads its tokens in
the next step(), after handing over that step's own work: one host sync per step, and
the device never waits for the host to build the next step (mlx-lm's BatchGenerator
does the same). What crosses that boundary lives here: which rows a pass sampled for,
the lazy tokens and "finite" flags it produces, the next pass's inputs taken from them
without reading them, and the tokens applied to their sequences once read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import mlx.core as mx

from inferd.backends.base import NON_FINITE_SCORES, BackendError, StepResult
from inferd.backends.mlx_sampler import RowSampling


@dataclass(slots=True, eq=False)
class MlxSequence:
    seq_id: int
    tokens: list[int]  # the prompt, then every sampled token
    sampling: RowSampling
    num_computed: int = 0  # tokens whose keys and values are in its cache
    cache: list[Any] | None = None  # its own while prefilling; None waiting or in the batch
    failed: bool = False  # its cache cannot be trusted: never offered for reuse

    @property
    def pending(self) -> int:
        """Prompt tokens to prefill; the last one runs as the first decode input."""
        return len(self.tokens) - 1 - self.num_computed


Read = tuple[MlxSequence, int, bool]  # a row's sequence, sampled token, finite scores


@dataclass(slots=True)
class InFlight:
    """A decode pass handed to MLX whose tokens the host has not read yet."""

    rows: list[MlxSequence]  # the sequences, in row order
    tokens: mx.array
    finite: mx.array
    decode_only: bool = True  # no prompt computed or joined in the same step (pacer)

    def read(self) -> list[Read]:
        """Each row's sampled token and whether its scores were finite: the host sync.
        Raises what the pass raised on the device."""
        tokens, finite = self.tokens.tolist(), self.finite.tolist()
        return list(zip(self.rows, tokens, finite, strict=True))


def next_inputs(
    flight: InFlight | None, rows: list[MlxSequence]
) -> tuple[mx.array, list[mx.array | None]]:
    """The rows' next inputs (lazy) and, per row, the token not yet in its host history:
    a row that continues takes its token still in flight, a row that just joined its
    prompt's last token. The same rows as in flight take the flight's tokens as they are."""
    where = {id(s): i for i, s in enumerate(flight.rows)} if flight else {}
    if flight is not None and [id(s) for s in rows] == list(where):
        if not any(s.sampling.processors for s in rows):  # nobody reads the history
            return flight.tokens, [None] * len(rows)
        return flight.tokens, [flight.tokens[i : i + 1] for i in range(len(rows))]
    fed: list[mx.array | None] = []
    pieces = []
    for seq in rows:
        if id(seq) in where:
            i = where[id(seq)]
            fed.append(flight.tokens[i : i + 1])  # type: ignore[union-attr]
            pieces.append(fed[-1])
        else:
            fed.append(None)
            pieces.append(mx.array([seq.tokens[-1]], dtype=mx.uint32))
    return mx.concatenate(pieces), fed


def step_results(
    read: list[Read],
    errors: Mapping[int, Exception],
    live: Mapping[int, MlxSequence],
) -> list[StepResult]:
    """The step's results: the errors of the sequences still `live`, then each read
    token appended to its sequence's history -- unless that sequence finished since the
    pass was handed over or ended with an error in this step. A row whose scores were
    not finite ends its own sequence (marked failed: its cache is never reused)."""
    results = [
        StepResult(seq_id, error=error) for seq_id, error in errors.items() if seq_id in live
    ]
    for seq, token, ok in read:
        if live.get(seq.seq_id) is not seq or seq.seq_id in errors:
            continue
        if ok:
            seq.tokens.append(token)
            seq.sampling.accept(token)
            results.append(StepResult(seq.seq_id, token=token))
        else:
            seq.failed = True
            results.append(StepResult(seq.seq_id, error=BackendError(NON_FINITE_SCORES)))
    return results
