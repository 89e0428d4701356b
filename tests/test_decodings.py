"""inferd/decodings.py: a DecodingBackend's Decodings stepped in turn as one Batcher."""

from __future__ import annotations

from inferd.backends.base import SamplingParams
from inferd.decodings import DecodingBatcher
from inferd.testing.fakes import EOS, REPLY, FakeBackend

GREEDY = SamplingParams(temperature=0.0)


def test_every_sequence_gets_one_token_per_step_in_join_order():
    backend = FakeBackend()
    batcher = DecodingBatcher(backend)
    batcher.add(7, [1], GREEDY)
    batcher.step()
    batcher.add(3, [2], GREEDY)
    results = batcher.step()
    assert [r.seq_id for r in results] == [7, 3]
    assert [r.token for r in results] == [ord(REPLY[1]), ord(REPLY[0])]


def test_a_failing_decoding_fails_alone():
    backend = FakeBackend(fail_after=2)
    batcher = DecodingBatcher(backend)
    batcher.add(0, [1], GREEDY)
    batcher.step()
    batcher.step()
    batcher.add(1, [2], GREEDY)
    results = {r.seq_id: r for r in batcher.step()}
    assert results[0].error is not None and results[0].token is None
    assert results[1].error is None and results[1].token == ord(REPLY[0])


def test_finish_closes_once_and_the_sequence_leaves():
    backend = FakeBackend(reply="ab")
    batcher = DecodingBatcher(backend)
    batcher.add(0, [1], GREEDY)
    batcher.add(1, [1], GREEDY)
    batcher.finish(0)
    batcher.finish(0)
    assert backend.closed == 1
    assert [r.seq_id for r in batcher.step()] == [1]
    assert [r.token for r in batcher.step()] == [ord("b")]
    assert [r.token for r in batcher.step()] == [EOS]
