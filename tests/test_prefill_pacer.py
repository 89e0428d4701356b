"""inferd/prefill_pacer.py: chunks sized so a step with one takes <= slowdown x a decode step."""

from __future__ import annotations

import pytest

from inferd.prefill_pacer import PrefillPacer


def test_no_limit_until_a_decode_only_step_was_timed():
    pacer = PrefillPacer(2.0, start_tokens=16)
    assert pacer.limit() is None
    pacer.record(0, 512, 0.5)  # prompts alone: nobody decodes beside them
    pacer.record(4, 16, 0.02)  # a chunk, but no decode-only step to compare it with
    assert pacer.limit() is None
    pacer.record(4, 0, 0.01)
    assert pacer.limit() == 16  # the first chunk is the small start


def test_the_chunk_is_sized_to_the_slowdown_from_what_the_last_one_cost():
    pacer = PrefillPacer(2.0, start_tokens=16)
    pacer.record(8, 0, 0.010)
    # 16 tokens added 20 ms to a 10 ms decode step; 10 ms is allowed: 8 tokens next
    pacer.record(8, 16, 0.030)
    assert pacer.limit() == 8
    # 8 tokens added 5 ms: the next may double, no more, however cheap they looked
    pacer.record(8, 8, 0.015)
    assert pacer.limit() == 16
    pacer.record(8, 16, 0.0101)
    assert pacer.limit() == 32


def test_a_looser_slowdown_allows_longer_chunks():
    tight, loose = PrefillPacer(1.5, start_tokens=16), PrefillPacer(3.0, start_tokens=16)
    for pacer in (tight, loose):
        pacer.record(8, 0, 0.010)
        pacer.record(8, 16, 0.020)  # 16 tokens cost a decode step's time
    assert (tight.limit(), loose.limit()) == (8, 32)


def test_the_decode_time_is_a_running_average():
    pacer = PrefillPacer(2.0, start_tokens=16)
    pacer.record(8, 0, 0.010)
    pacer.record(8, 0, 0.050)  # one slow step moves it a quarter of the way
    pacer.record(8, 16, 0.020 + 0.020)
    # decode 20 ms: 16 tokens added 20 ms, 20 ms allowed
    assert pacer.limit() == 16


def test_a_limit_is_at_least_one_token():
    pacer = PrefillPacer(1.0, start_tokens=16)
    pacer.record(8, 0, 0.010)
    pacer.record(8, 16, 0.050)  # slowdown 1 allows nothing extra
    assert pacer.limit() == 1


def test_a_slowdown_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        PrefillPacer(0.5, start_tokens=16)


def test_an_engine_may_time_its_chunks_on_their_own():
    pacer = PrefillPacer(2.0, start_tokens=8)
    pacer.record_chunk(8, 0.004)  # no decode time yet: nothing to compare with
    assert pacer.limit() is None
    pacer.record_decode(0.006)
    pacer.record_chunk(8, 0.012)  # 8 tokens cost 12 ms where 6 are allowed
    assert pacer.limit() == 4
