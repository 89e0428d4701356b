"""backends/mlx_batcher.py on stories260K (mlx's CPU backend): batching, chunked prefill
and prefix reuse (failures and the KV cache's room: test_mlx_batcher_failures.py).

Greedy output is the yardstick: a sequence must produce the same tokens alone, batched
with others that join and leave, with its prompt prefilled in chunks, or with its prefix
taken from the prompt cache. As in test_mlx_backend.py, all MLX work runs on one
long-lived worker thread.
"""

from __future__ import annotations

import pytest

from inferd.backends.base import EngineOptions, SamplingParams
from tests import mlx_batcher_support
from tests.batching import GREEDY, PROMPTS, TOKENS, run_alone, run_together
from tests.mlx_batcher_support import NO_REUSE, STORY, batcher_of, small_steps
from tests.mlx_support import require_stories

require_stories()

pytestmark = pytest.mark.real_model

# The module-scoped fixtures, one model load a module (tests/mlx_batcher_support.py).
stories = mlx_batcher_support.stories
prompts = mlx_batcher_support.prompts
alone = mlx_batcher_support.alone


def test_greedy_batched_equals_alone_as_rows_join_and_leave(owner, stories, prompts, alone):
    lengths = (TOKENS, 9, TOKENS, 15)  # two leave early, while the others go on
    got = owner(
        run_together, batcher_of(stories, NO_REUSE), prompts, [GREEDY] * 4, (0, 0, 3, 7), lengths
    )
    assert got == [tokens[:n] for tokens, n in zip(alone, lengths, strict=True)]


def test_each_row_keeps_its_own_sampling_params_and_seed(owner, stories, prompts):
    params = [
        GREEDY,
        SamplingParams(temperature=0.9, top_k=20, top_p=0.9, seed=7),
        SamplingParams(temperature=0.0, repeat_penalty=1.5),
        SamplingParams(temperature=1.2, top_k=0, top_p=1.0, seed=3),
    ]

    def run() -> tuple[list[list[int]], list[list[int]]]:
        single = [
            run_alone(batcher_of(stories, NO_REUSE), p, q, TOKENS)
            for p, q in zip(prompts, params, strict=True)
        ]
        together = run_together(
            batcher_of(stories, NO_REUSE), prompts, params, (0, 1, 2, 0), [TOKENS] * 4
        )
        return single, together

    single, together = owner(run)
    assert together == single  # seeded rows draw the same numbers in a batch
    assert single[2] != owner(run_alone, batcher_of(stories, NO_REUSE), prompts[2], GREEDY, TOKENS)


def test_unseeded_rows_beside_a_seeded_one_are_not_made_predictable(owner, stories, prompts):
    free = SamplingParams(temperature=1.0, top_k=0, top_p=1.0)
    seeded = SamplingParams(temperature=1.0, seed=5)

    def run() -> list[list[int]]:
        batcher = batcher_of(stories, NO_REUSE)
        return run_together(batcher, [prompts[0]] * 3, [seeded, free, free], (0, 0, 0), [40] * 3)

    first, second = owner(run), owner(run)
    assert first[0] == second[0]
    assert first[1:] != second[1:]


def test_a_prompt_prefilled_in_chunks_gives_the_same_tokens(owner, stories):
    def run() -> tuple[list[int], list[int]]:
        prompt = stories.encode_text(STORY)
        assert len(prompt) > 3 * 16
        chunked = run_alone(batcher_of(stories, small_steps(prefix=0)), prompt, GREEDY, 20)
        whole = run_alone(batcher_of(stories, NO_REUSE), prompt, GREEDY, 20)
        return chunked, whole

    chunked, whole = owner(run)
    assert chunked == whole


def test_running_streams_get_a_token_every_step_while_a_long_prompt_arrives(
    owner, stories, prompts
):
    def run() -> tuple[int, list[list[int]]]:
        batcher = batcher_of(stories, small_steps(prefix=0))
        long_prompt = stories.encode_text(STORY)
        batcher.add(0, prompts[0], GREEDY)
        batcher.add(1, prompts[1], GREEDY)
        while len({r.seq_id for r in batcher.step()}) < 2:  # both decoding
            pass
        batcher.add(2, long_prompt, GREEDY)
        steps, seen = 0, []
        while True:
            results = {r.seq_id: r for r in batcher.step()}
            steps += 1
            seen.append(sorted(results))
            if 2 in results:
                break
        return steps, seen

    steps, seen = owner(run)
    assert steps > 3  # the long prompt really was spread over several steps
    assert all(ids[:2] == [0, 1] for ids in seen)  # and nobody waited meanwhile


class RecordingPacer:
    """A pacer that allows 9 tokens a chunk and keeps what the batcher tells it."""

    def __init__(self) -> None:
        self.decodes: list[float] = []
        self.chunks: list[tuple[int, float]] = []

    def record_decode(self, seconds: float) -> None:
        self.decodes.append(seconds)

    def record_chunk(self, prompt_tokens: int, seconds: float) -> None:
        self.chunks.append((prompt_tokens, seconds))

    def limit(self) -> int:
        return 9


def test_the_pacer_times_decode_steps_and_chunks_and_sizes_a_long_prompts_chunks(
    owner, stories, prompts
):
    def run() -> tuple[RecordingPacer, int, int, int]:
        batcher = batcher_of(stories, small_steps(prefix=0))
        batcher.pacer = pacer = RecordingPacer()
        batcher.add(0, prompts[0], GREEDY)
        batcher.add(1, prompts[1], GREEDY)
        for _ in range(6):
            batcher.step()
        decodes_before, chunks_before = len(pacer.decodes), len(pacer.chunks)
        long_prompt = stories.encode_text(STORY)
        batcher.add(2, long_prompt, GREEDY)
        while 2 not in {r.seq_id for r in batcher.step()}:
            pass
        return pacer, decodes_before, chunks_before, len(long_prompt)

    pacer, decodes_before, chunks_before, length = owner(run)
    assert decodes_before > 0 and all(seconds > 0 for seconds in pacer.decodes)
    chunks = [tokens for tokens, _ in pacer.chunks[chunks_before:]]
    # 16 a step less the 2 decodes would be 14: the pacer's 9; each chunk timed on its own,
    # the last one too (the prompt joins the batch in a step of its own)
    assert len(chunks) > 3 and set(chunks[:-1]) == {9} and 0 < chunks[-1] <= 9
    assert all(seconds > 0 for _, seconds in pacer.chunks)
    assert sum(chunks) == length - 1  # all but the last token, the first decode's input


def test_a_chats_next_turn_reuses_its_history(owner, stories):
    def run() -> tuple[int, int, list[int], list[int]]:
        batcher = batcher_of(stories, EngineOptions())
        first = stories.encode_text(STORY)
        answer = run_alone(batcher, first, GREEDY, 12)
        second = first + answer + stories.encode_text(" Then")[1:]
        before = batcher.prompt_cache.hit_tokens
        reused = run_alone(batcher, second, GREEDY, 12)
        fresh = run_alone(batcher_of(stories, NO_REUSE), second, GREEDY, 12)
        return batcher.prompt_cache.hit_tokens - before, len(first) + len(answer), reused, fresh

    hits, history, reused, fresh = owner(run)
    assert hits == history  # the answer's last token too: it ran in the step in flight
    assert reused == fresh


def test_a_shared_system_prompt_is_reused_by_other_questions(owner, stories):
    def run() -> tuple[int, int, list[list[int]], list[list[int]]]:
        system = stories.encode_text(STORY)
        questions = [stories.encode_text(" Tom went home")[1:], stories.encode_text(" A dog")[1:]]
        batcher = batcher_of(stories, EngineOptions())
        run_alone(batcher, system + questions[0], GREEDY, 6)
        before = batcher.prompt_cache.hit_tokens
        reused = [run_alone(batcher, system + q, GREEDY, 10) for q in questions]
        fresh = [
            run_alone(batcher_of(stories, NO_REUSE), system + q, GREEDY, 10) for q in questions
        ]
        return batcher.prompt_cache.hit_tokens - before, len(system), reused, fresh

    hits, system, reused, fresh = owner(run)
    assert hits >= 2 * system  # the second question took the system prompt from the first
    assert reused == fresh


def test_requests_arriving_together_compute_a_shared_prefix_once(owner, stories):
    def run() -> tuple[int, int]:
        system = stories.encode_text(STORY)
        batcher = batcher_of(stories, small_steps(prefix=None))
        questions = [" Tom", " Sue", " A cat"]
        run_together(
            batcher,
            [system + stories.encode_text(q)[1:] for q in questions],
            [GREEDY] * 3,
            (0, 0, 0),
            [4] * 3,
        )
        return batcher.prompt_cache.hit_tokens, len(system)

    hits, system = owner(run)
    # The later two started as budget was left over and found what the first had
    # computed by then: all of the system prompt but at most one step's chunk.
    assert hits >= 2 * (system - 16)


def test_prefix_cache_tokens_zero_turns_reuse_off(owner, stories, prompts):
    def run() -> int:
        batcher = batcher_of(stories, NO_REUSE)
        run_alone(batcher, prompts[0], GREEDY, 4)
        run_alone(batcher, prompts[0], GREEDY, 4)
        return batcher.prompt_cache.hit_tokens

    assert owner(run) == 0


def test_the_prompt_cache_stays_within_prefix_cache_tokens(owner, stories, prompts):
    def run() -> list[int]:
        batcher = batcher_of(stories, EngineOptions(prefix_cache_tokens=300))
        held = []
        for text in [STORY, *PROMPTS, STORY + " Then"]:
            run_alone(batcher, stories.encode_text(text), GREEDY, 8)
            held.append(batcher.prompt_cache.tokens)
        return held

    held = owner(run)
    assert max(held) <= 300
    assert held[-1] > 0  # the latest request's cache is still there


def test_a_whole_prompt_found_in_the_cache_still_runs_its_last_token(owner, stories, prompts):
    def run() -> tuple[list[int], list[int]]:
        batcher = batcher_of(stories, EngineOptions())
        first = run_alone(batcher, prompts[0], GREEDY, 8)
        return first, run_alone(batcher, prompts[0], GREEDY, 8)

    first, again = owner(run)
    assert again == first


def test_penalties_read_the_same_history_as_mlx_lms_own_loop(owner, stories, prompts):
    params = SamplingParams(temperature=0.0, repeat_penalty=1.3, presence_penalty=0.5)

    def run() -> tuple[list[int], list[int], list[int]]:
        import mlx.core as mx
        from mlx_lm.generate import generate_step

        from inferd.backends.mlx_sampler import row_sampling

        processors = row_sampling(params, prompts[0], 512).processors
        model = batcher_of(stories, NO_REUSE).model
        steps = generate_step(
            mx.array(prompts[0]), model, max_tokens=40, logits_processors=processors
        )
        theirs = [token for token, _ in steps]
        alone = run_alone(batcher_of(stories, NO_REUSE), prompts[0], params, 40)
        together = run_together(
            batcher_of(stories, NO_REUSE), prompts[:2], [params, GREEDY], (0, 3), [40, 40]
        )[0]
        return theirs, alone, together

    theirs, alone, together = owner(run)
    assert alone == theirs and together == theirs


def test_penalties_count_each_token_once_while_a_long_prompt_arrives(owner, stories, prompts):
    """Steps that run a prompt's chunk beside decoding rows read their tokens early (to
    time the chunk); the rows' penalties must still count each token once. (A negative
    frequency penalty rewards repeats: a token counted twice wins where it should not.)"""
    params = SamplingParams(temperature=0.0, frequency_penalty=-2.0)

    def run() -> tuple[list[int], list[int]]:
        alone = run_alone(batcher_of(stories, NO_REUSE), prompts[3], params, TOKENS)
        story = stories.encode_text(STORY)
        together = run_together(
            batcher_of(stories, small_steps(0)), [prompts[3], story], [params, GREEDY],
            (0, 2), [TOKENS, 4],
        )[0]  # fmt: skip
        return alone, together

    alone, together = owner(run)
    assert together == alone
