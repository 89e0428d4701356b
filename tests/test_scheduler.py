"""inferd/scheduler.py: decodes first, prompts in chunks within the budget, preemption."""

from __future__ import annotations

import pytest

from inferd.backends.base import SamplingParams
from inferd.kv_blocks import BlockManager
from inferd.prefill_pacer import PrefillPacer
from inferd.scheduler import ScheduledBatch, Scheduler, prompt_budget
from inferd.sequence import SequenceState

PARAMS = SamplingParams(temperature=0.0)


def scheduler(
    blocks: int = 64,
    size: int = 4,
    budget: int = 8,
    prefill: int = 16,
    pacer: PrefillPacer | None = None,
    chunk_stages: int = 1,
) -> Scheduler:
    manager = BlockManager(blocks, size, max_cached_blocks=blocks)
    return Scheduler(manager, budget, prefill, pacer, chunk_stages)


def add(sched: Scheduler, seq_id: int, length: int) -> SequenceState:
    seq = SequenceState.new(seq_id, list(range(100 * seq_id, 100 * seq_id + length)), PARAMS)
    sched.add(seq)
    return seq


def step(sched: Scheduler, seconds: float | None = None) -> list[tuple[int, int]]:
    """Schedule one step and record it as run (in `seconds`), each finished row
    sampling token 7."""
    batch = sched.schedule()
    sampled = {seq.seq_id: 7 for seq, n in batch.items if seq.num_computed + n == len(seq.tokens)}
    sched.postprocess(batch, sampled, seconds)
    return [(seq.seq_id, n) for seq, n in batch.items]


def test_a_prompt_alone_goes_in_chunks_of_the_prefill_budget():
    sched = scheduler(budget=8, prefill=16)
    add(sched, 1, 40)
    assert [step(sched) for _ in range(4)] == [[(1, 16)], [(1, 16)], [(1, 8)], [(1, 1)]]


def test_decodes_come_first_and_prompts_get_what_is_left():
    sched = scheduler(budget=8, prefill=16)
    add(sched, 1, 3)
    add(sched, 2, 3)
    assert step(sched) == [(1, 3), (2, 3)]
    add(sched, 3, 30)
    # two decodes, then 6 of the long prompt: the step stays within 8 tokens
    assert step(sched) == [(1, 1), (2, 1), (3, 6)]
    assert step(sched) == [(1, 1), (2, 1), (3, 6)]


def test_prompts_are_served_oldest_first():
    sched = scheduler(budget=8, prefill=8)
    add(sched, 1, 6)
    add(sched, 2, 6)
    assert step(sched) == [(1, 6), (2, 2)]
    assert step(sched) == [(1, 1), (2, 4)]


def test_a_cached_prefix_is_skipped():
    sched = scheduler(budget=64, prefill=64)
    first = add(sched, 1, 20)
    step(sched)
    sched.finish(first)
    second = SequenceState.new(2, [*first.tokens[:20], 1, 2, 3], PARAMS)
    sched.add(second)
    assert step(sched) == [(2, 3)]  # 20 tokens = 5 whole blocks came from the cache
    assert sched.prefix_hit_tokens == 20


def test_the_youngest_is_preempted_when_a_decode_needs_a_block():
    sched = scheduler(blocks=4, size=4, budget=16, prefill=16)
    old = add(sched, 1, 7)
    young = add(sched, 2, 7)
    step(sched)  # each holds 2 blocks: 7 prompt tokens and the sampled one
    step(sched)  # the sampled one is computed into the last free position
    step(sched)  # each needs a third block: the young one makes room for the old one
    assert sched.running == [old]
    assert list(sched.waiting) == [young]
    assert young.num_computed == 0 and young.blocks == []
    assert young.tokens[-1] == 7  # its generated token is kept to recompute from


def test_a_sequence_that_outgrows_the_whole_cache_fails_alone():
    sched = scheduler(blocks=2, size=4, budget=16, prefill=16)
    seq = add(sched, 1, 7)
    step(sched)
    step(sched)
    batch = sched.schedule()  # its 9th token needs a third block; there are two
    assert [seq.seq_id for seq, _ in batch.failed] == [1]
    assert "kv_cache_tokens" in batch.failed[0][1]
    assert not sched.has_work and seq.blocks == []


def test_a_prompt_bigger_than_the_cache_is_refused_at_once():
    with pytest.raises(ValueError, match="kv_cache_tokens"):
        add(scheduler(blocks=2, size=4), 1, 8)


def test_a_prompt_waits_while_memory_is_short():
    sched = scheduler(blocks=3, size=4, budget=16, prefill=16)
    add(sched, 1, 8)
    add(sched, 2, 8)
    assert step(sched) == [(1, 8), (2, 4)]  # only one block left for the second
    assert step(sched) == [(1, 1)]  # the first needs its third block: the second is preempted


def test_the_prompt_budget_grows_with_the_prompts_waiting():
    # nothing decoding: the whole prefill budget
    assert prompt_budget(0, 1, 64, 512, floor=16) == 512
    # one prompt among 8 decodes: what the step's 64 leave
    assert prompt_budget(8, 1, 64, 512, floor=16) == 56
    # a burst: 64 a prompt, up to the prefill budget
    assert prompt_budget(1, 7, 64, 512, floor=16) == 448
    assert prompt_budget(8, 20, 64, 512, floor=16) == 512
    # however many decode, a prompt advances
    assert prompt_budget(100, 1, 64, 512, floor=16) == 16
    # a new prompt that fits in the step's 64 is not cut by the decodes
    assert prompt_budget(8, 1, 64, 512, floor=16, new_prompt=64) == 64
    assert prompt_budget(8, 1, 64, 512, floor=16, new_prompt=60) == 60
    assert prompt_budget(8, 1, 64, 512, floor=16, new_prompt=65) == 56
    # the pacer can only shorten a long prompt's chunks, down to the floor
    assert prompt_budget(8, 1, 64, 512, floor=16, paced=30) == 30
    assert prompt_budget(8, 1, 64, 512, floor=16, paced=500) == 56
    assert prompt_budget(8, 1, 64, 512, floor=16, paced=3) == 16
    # nor does it touch a burst of prompts
    assert prompt_budget(1, 7, 64, 512, floor=16, paced=30) == 448


def test_a_short_prompt_beside_decodes_runs_whole_a_long_one_in_chunks():
    sched = scheduler(budget=8, prefill=32)
    for seq_id in (1, 2, 3):
        add(sched, seq_id, 3)
    step(sched)
    add(sched, 4, 8)
    # three decodes would leave 5 of the 8 tokens: the 8-token prompt runs whole instead
    assert step(sched) == [(1, 1), (2, 1), (3, 1), (4, 8)]
    add(sched, 5, 9)
    assert step(sched) == [(1, 1), (2, 1), (3, 1), (4, 1), (5, 4)]


def test_a_burst_of_prompts_starts_together_while_one_long_prompt_goes_in_chunks():
    sched = scheduler(budget=8, prefill=32)
    add(sched, 1, 3)
    assert step(sched) == [(1, 3)]
    for seq_id in (2, 3, 4, 5):
        add(sched, seq_id, 8)
    # one decode and four prompts: 8 tokens a prompt, all four in one step
    assert step(sched) == [(1, 1), (2, 8), (3, 8), (4, 8), (5, 8)]
    add(sched, 6, 40)
    # five decodes and one long prompt: what the decodes leave of 8, but one block (4) at least
    assert step(sched) == [(1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (6, 4)]
    add(sched, 7, 3)
    add(sched, 8, 3)
    # the long prompt is one of three now: 8 tokens each, oldest first
    assert step(sched) == [(1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (6, 24)]


def test_a_long_prompt_beside_decodes_goes_in_chunks_the_pacer_sizes_from_step_times():
    sched = scheduler(budget=32, prefill=64, pacer=PrefillPacer(2.0, start_tokens=4))
    for seq_id in (1, 2):
        add(sched, seq_id, 3)
    step(sched, 0.5)  # prompts alone: teaches the pacer nothing
    assert step(sched, 0.010) == [(1, 1), (2, 1)]  # a decode step takes 10 ms
    add(sched, 3, 200)
    # its first chunk is the pacer's start, though the decodes leave 30 of 32
    assert step(sched, 0.014) == [(1, 1), (2, 1), (3, 4)]
    # 4 tokens added 4 ms of the 10 allowed: it may double
    assert step(sched, 0.018) == [(1, 1), (2, 1), (3, 8)]
    # 8 tokens added 8 ms: 10 next; then 10 added 20 ms: 5
    assert step(sched, 0.030) == [(1, 1), (2, 1), (3, 10)]
    assert step(sched) == [(1, 1), (2, 1), (3, 5)]


def test_prompt_chunks_run_apart_from_their_decodes_are_timed_as_what_they_add():
    """An engine that runs a step's chunks in a pass of their own reports that pass."""
    sched = scheduler(budget=32, prefill=64, pacer=PrefillPacer(2.0, start_tokens=4))
    for seq_id in (1, 2):
        add(sched, seq_id, 3)
    step(sched, 0.5)
    step(sched, 0.010)  # a decode step takes 10 ms
    add(sched, 3, 200)
    batch = sched.schedule()
    assert [(seq.seq_id, n) for seq, n in batch.items] == [(1, 1), (2, 1), (3, 4)]
    chunks = ScheduledBatch([(seq, n) for seq, n in batch.items if n > 1])
    sched.postprocess(chunks, {}, 0.004, decodes_apart=True)  # 4 tokens took 4 ms
    sched.postprocess(ScheduledBatch(batch.items[:2]), {1: 7, 2: 7}, 0.010)
    # 4 ms of the 10 allowed: it may double (timed as a step of decodes and chunk, 14 ms,
    # it would have been the same; timed as a step of its own, it would teach nothing)
    assert step(sched) == [(1, 1), (2, 1), (3, 8)]


def test_a_long_prompts_chunk_beside_decodes_is_marked_for_stages_and_as_long_as_they_allow():
    sched = scheduler(budget=8, prefill=16, chunk_stages=3)
    add(sched, 1, 3)
    add(sched, 2, 3)
    alone = sched.schedule()
    assert alone.stages == 1  # prompts alone: nobody decodes beside them
    sched.postprocess(alone, {1: 7, 2: 7})
    add(sched, 3, 40)
    batch = sched.schedule()
    # what the two decodes leave of 8, three times over: each part adds a third
    assert [(seq.seq_id, n) for seq, n in batch.items] == [(1, 1), (2, 1), (3, 18)]
    assert batch.stages == 3


def test_a_short_new_prompt_beside_decodes_runs_whole_and_in_one_pass():
    sched = scheduler(budget=8, prefill=16, chunk_stages=3)
    add(sched, 1, 3)
    step(sched)
    add(sched, 2, 7)  # within max_batch_tokens: its first token as soon as it can
    batch = sched.schedule()
    assert [(seq.seq_id, n) for seq, n in batch.items] == [(1, 1), (2, 7)]
    assert batch.stages == 1


def test_decode_rows_alone_are_scheduled_while_a_chunk_is_in_stages():
    sched = scheduler(budget=8, prefill=16, chunk_stages=3)
    add(sched, 1, 3)
    step(sched)
    add(sched, 2, 40)
    batch = sched.schedule(prompts=False)
    assert [(seq.seq_id, n) for seq, n in batch.items] == [(1, 1)]
    assert list(sched.waiting) and sched.waiting[0].seq_id == 2  # not started
