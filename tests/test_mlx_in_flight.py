"""backends/mlx_in_flight.py: the next pass's inputs from the tokens in flight, and the
read tokens applied to their sequences."""

from __future__ import annotations

import pytest

mx = pytest.importorskip("mlx.core")

from inferd.backends.base import NON_FINITE_SCORES, SamplingParams  # noqa: E402
from inferd.backends.mlx_in_flight import (  # noqa: E402
    InFlight,
    MlxSequence,
    next_inputs,
    step_results,
)
from inferd.backends.mlx_sampler import row_sampling  # noqa: E402

VOCAB = 100


def sequence(seq_id: int, prompt: list[int], penalty: float = 1.0) -> MlxSequence:
    params = SamplingParams(temperature=0.0, repeat_penalty=penalty)
    return MlxSequence(seq_id, list(prompt), row_sampling(params, prompt, VOCAB))


def flight(rows: list[MlxSequence], tokens: list[int], finite: list[bool]) -> InFlight:
    return InFlight(rows, mx.array(tokens, dtype=mx.uint32), mx.array(finite))


def test_the_same_rows_take_the_tokens_in_flight_as_they_are():
    rows = [sequence(1, [5, 6]), sequence(2, [7])]
    passing = flight(rows, [11, 12], [True, True])
    inputs, fed = next_inputs(passing, rows)
    assert inputs is passing.tokens and fed == [None, None]  # nobody reads the history


def test_rows_whose_penalties_read_the_history_are_told_their_token_in_flight():
    rows = [sequence(1, [5, 6], penalty=1.3), sequence(2, [7])]
    inputs, fed = next_inputs(flight(rows, [11, 12], [True, True]), rows)
    assert inputs.tolist() == [11, 12]
    assert [f.tolist() for f in fed] == [[11], [12]]  # type: ignore[union-attr]


def test_a_joining_row_feeds_its_prompts_last_token_beside_the_continuing_ones():
    old, new = sequence(1, [5, 6]), sequence(2, [7, 8, 9])
    inputs, fed = next_inputs(flight([old], [11], [True]), [old, new])
    assert inputs.tolist() == [11, 9]
    assert fed[0].tolist() == [11] and fed[1] is None  # type: ignore[union-attr]
    first, _ = next_inputs(None, [new])
    assert first.tolist() == [9]


def test_read_tokens_join_their_histories_and_non_finite_rows_end_alone():
    good, bad, gone, broken = (sequence(i, [i]) for i in range(4))
    passing = flight([good, bad, gone, broken], [21, 22, 23, 24], [True, False, True, True])
    live = {s.seq_id: s for s in (good, bad, broken)}  # `gone` finished meanwhile
    error = RuntimeError("its own failure")
    results = step_results(passing.read(), {broken.seq_id: error, 99: error}, live)
    by_id = {r.seq_id: r for r in results}
    assert set(by_id) == {good.seq_id, bad.seq_id, broken.seq_id}  # nothing for 99 or gone
    assert by_id[good.seq_id].token == 21 and good.tokens == [0, 21]
    assert str(by_id[bad.seq_id].error) == NON_FINITE_SCORES and bad.failed
    assert bad.tokens == [1]
    assert by_id[broken.seq_id].error is error and broken.tokens == [3]  # not its token
    assert gone.tokens == [2]
