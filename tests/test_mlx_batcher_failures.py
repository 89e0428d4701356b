"""backends/mlx_batcher.py: failing or refused requests end alone; KV room is waited for, freed."""

from __future__ import annotations

import pytest

from inferd.backends.base import BackendError, EngineOptions, SamplingParams
from tests import mlx_batcher_support
from tests.batching import GREEDY, TOKENS, run_alone, run_together
from tests.mlx_batcher_support import NO_REUSE, STORY, batcher_of, small_steps
from tests.mlx_support import require_stories

require_stories()

pytestmark = pytest.mark.real_model

# The module-scoped fixtures, one model load a module (tests/mlx_batcher_support.py).
stories = mlx_batcher_support.stories
prompts = mlx_batcher_support.prompts
alone = mlx_batcher_support.alone


class Poisoned:
    """Wraps a model: raises after its forward pass (so the caches have been appended to)
    when `raise_on` is among the input ids, and gives NaN scores to the rows whose last
    input id is `nan_on`."""

    def __init__(self, model, raise_on: int | None = None, nan_on: int | None = None) -> None:
        self.model = model
        self.raise_on = raise_on
        self.nan_on = nan_on

    def __getattr__(self, name: str):  # layers etc., for mlx-lm's make_prompt_cache
        return getattr(self.model, name)

    def __call__(self, inputs, cache=None):
        import mlx.core as mx

        logits = self.model(inputs, cache=cache)
        ids = inputs.tolist()
        if any(self.raise_on in row for row in ids):
            raise ValueError("poisoned input")
        poisoned = mx.array([row[-1] == self.nan_on for row in ids])
        return mx.where(poisoned[:, None, None], mx.array(float("nan")), logits)


def test_a_failing_prefill_ends_only_its_own_request(owner, stories, prompts, alone):
    def run() -> tuple[dict[int, Exception], list[list[int]]]:
        batcher = batcher_of(stories, NO_REUSE)
        batcher.model = Poisoned(batcher.model, raise_on=511)
        broken = [*prompts[2][:3], 511, *prompts[2][3:]]
        errors: dict[int, Exception] = {}
        got = run_together(
            batcher, [prompts[0], prompts[1], broken], [GREEDY] * 3, (0, 0, 2), [TOKENS] * 3, errors
        )
        return errors, got

    errors, got = owner(run)
    assert list(errors) == [2] and "poisoned" in str(errors[2])
    assert got[:2] == alone[:2]


def test_a_prompt_failing_beside_another_prompts_chunk_still_gets_its_error(
    owner, stories, prompts, alone
):
    """The step reads its tokens early there (to time the chunk): an error raised after
    that read must still reach its request, or the request would wait forever."""

    def run() -> tuple[dict[int, Exception], list[list[int]]]:
        batcher = batcher_of(stories, small_steps(0))
        batcher.model = Poisoned(batcher.model, raise_on=511)
        broken = [*prompts[1], 511, prompts[1][-1]]  # fails in its last prefill chunk
        story = stories.encode_text(STORY)  # started in the same step, chunk by chunk
        errors: dict[int, Exception] = {}
        got = run_together(
            batcher, [prompts[0], broken, story], [GREEDY] * 3, (0, 2, 2), [TOKENS] * 3, errors
        )
        return errors, got

    errors, got = owner(run)
    assert list(errors) == [1] and "poisoned" in str(errors[1])
    assert got[0] == alone[0] and len(got[2]) == TOKENS


def test_a_failing_decode_row_ends_only_its_own_request(owner, stories, prompts, alone):
    assert all(511 not in tokens for tokens in alone)

    def run() -> tuple[dict[int, Exception], list[list[int]]]:
        batcher = batcher_of(stories, NO_REUSE)
        batcher.model = Poisoned(batcher.model, raise_on=511)
        broken = [*prompts[1], 511]  # the last prompt id is the first decode input
        errors: dict[int, Exception] = {}
        got = run_together(
            batcher, [prompts[0], broken, prompts[2]], [GREEDY] * 3, (0, 2, 0), [TOKENS] * 3, errors
        )
        return errors, got

    errors, got = owner(run)
    assert list(errors) == [1]
    assert got[0] == alone[0] and got[2] == alone[2]


def test_a_row_with_non_finite_scores_ends_only_its_request(owner, stories, prompts, alone):
    def run() -> tuple[dict[int, Exception], list[list[int]]]:
        batcher = batcher_of(stories, NO_REUSE)
        batcher.model = Poisoned(batcher.model, nan_on=510)
        errors: dict[int, Exception] = {}
        got = run_together(
            batcher,
            [prompts[0], [*prompts[1], 510], prompts[2]],
            [GREEDY] * 3,
            (0, 0, 0),
            [TOKENS] * 3,
            errors,
        )
        return errors, got

    errors, got = owner(run)
    assert list(errors) == [1] and "non-finite" in str(errors[1])
    assert got[0] == alone[0] and got[2] == alone[2]


def test_a_token_outside_the_vocabulary_is_refused_at_once(owner, stories):
    batcher = owner(batcher_of, stories, NO_REUSE)
    with pytest.raises(BackendError, match="outside the model's vocabulary"):
        batcher.add(0, [1, 512], GREEDY)


def test_a_prompt_longer_than_the_whole_cache_is_refused(owner, stories):
    batcher = owner(batcher_of, stories, EngineOptions(kv_cache_tokens=64))
    with pytest.raises(BackendError, match="kv_cache_tokens"):
        batcher.add(0, [1] * 100, GREEDY)


def test_bad_sampling_params_are_refused_with_the_values(owner, stories):
    batcher = owner(batcher_of, stories, NO_REUSE)
    with pytest.raises(BackendError, match="top_p must be in"):
        batcher.add(0, [1, 2], SamplingParams(top_p=0.0))


def test_requests_wait_for_room_in_the_kv_cache(owner, stories, prompts, alone):
    def run() -> list[list[int]]:
        batcher = batcher_of(stories, EngineOptions(kv_cache_tokens=48, prefix_cache_tokens=0))
        return run_together(batcher, prompts[:3], [GREEDY] * 3, (0, 0, 0), [TOKENS] * 3)

    assert owner(run) == alone[:3]  # each started once the others left it room


def test_finish_mid_prefill_and_close_free_everything(owner, stories, prompts):
    def run() -> tuple[int, int]:
        batcher = batcher_of(stories, small_steps(prefix=None))
        batcher.add(0, stories.encode_text(STORY), GREEDY)
        batcher.add(1, prompts[0], GREEDY)
        batcher.step()
        batcher.finish(0)  # cancelled with part of its prompt computed
        batcher.finish(1)  # cancelled before it started
        batcher.finish(1)  # idempotent
        cached = batcher.prompt_cache.tokens
        batcher.close()
        return cached, batcher.prompt_cache.tokens

    cached, after_close = owner(run)
    assert cached > 0  # the computed part of the cancelled prompt is kept for a retry
    assert after_close == 0


class FailingEvaluation:
    """mlx.core as the batcher sees it, except that async_eval raises while `failing` (a
    step whose evaluation fails on the device: out of memory, a lost GPU)."""

    def __init__(self) -> None:
        import mlx.core

        self._mx = mlx.core
        self.failing = False

    def __getattr__(self, name: str):
        return getattr(self._mx, name)

    def async_eval(self, *arrays):
        if self.failing:
            raise RuntimeError("evaluation failed")
        return self._mx.async_eval(*arrays)


def test_a_failed_evaluation_ends_that_steps_requests_and_the_next_ones_run(
    owner, stories, prompts, alone, monkeypatch
):
    from inferd.backends import mlx_batcher

    evaluation = FailingEvaluation()
    monkeypatch.setattr(mlx_batcher, "mx", evaluation)

    def run() -> tuple[dict[int, Exception], list[int], list[int]]:
        batcher = batcher_of(stories, EngineOptions())  # with prefix reuse
        batcher.add(0, prompts[0], GREEDY)
        batcher.add(1, prompts[1], GREEDY)
        for _ in range(4):  # both decoding, tokens in flight
            batcher.step()
        evaluation.failing = True
        errors: dict[int, Exception] = {}
        for _ in range(3):  # the errors come back with the step, or the step after
            errors.update({r.seq_id: r.error for r in batcher.step() if r.error is not None})
            evaluation.failing = False
        for seq_id in errors:
            batcher.finish(seq_id)
        # The batcher goes on: a new request, and one sharing the failed one's prompt.
        return (
            errors,
            run_alone(batcher, prompts[2], GREEDY, TOKENS),
            run_alone(batcher, prompts[0], GREEDY, TOKENS),
        )

    errors, third, first_again = owner(run)
    assert sorted(errors) == [0, 1]
    assert all("evaluation failed" in str(error) for error in errors.values())
    assert third == alone[2] and first_again == alone[0]
