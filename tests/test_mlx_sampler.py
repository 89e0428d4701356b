"""backends/mlx_sampler.py: every row of a step sampled at once, each with its own params.

Logits are made up (no model): a row's result must not depend on the rows beside it.
"""

from __future__ import annotations

import pytest

from inferd.backends.base import BackendError, SamplingParams
from tests.mlx_support import require_mlx
from tests.owner import Owner

require_mlx()

VOCAB = 50
GREEDY = SamplingParams(temperature=0.0)


def logits(rows: int, seed: int = 0):
    import mlx.core as mx

    return mx.random.normal((rows, VOCAB), key=mx.random.key(seed)) * 3


def sample(rows_params: list[SamplingParams], values, prompts=None) -> tuple[list[int], list[bool]]:
    from inferd.backends.mlx_sampler import BatchSampler, row_sampling

    prompts = prompts or [[1, 2, 3]] * len(rows_params)
    rows = [row_sampling(p, q, VOCAB) for p, q in zip(rows_params, prompts, strict=True)]
    tokens, finite = BatchSampler().sample(values, rows)
    return tokens.tolist(), finite.tolist()


def test_greedy_rows_take_the_argmax(owner: Owner) -> None:
    def run() -> tuple[list[int], list[int]]:
        values = logits(3)
        return sample([GREEDY] * 3, values)[0], values.argmax(axis=-1).tolist()

    got, expected = owner(run)
    assert got == expected


def test_a_seeded_row_draws_the_same_beside_any_other_rows(owner: Owner) -> None:
    seeded = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, seed=11)
    free = SamplingParams(temperature=1.0, top_k=0, top_p=1.0)

    def run() -> tuple[list[int], list[int], list[int]]:
        from inferd.backends.mlx_sampler import BatchSampler, row_sampling

        values = logits(3, seed=4)
        alone_row, batched_row = (row_sampling(seeded, [1], VOCAB) for _ in range(2))
        others = [row_sampling(free, [1], VOCAB), row_sampling(GREEDY, [1], VOCAB)]
        sampler = BatchSampler()
        alone, batched, spread = [], [], set()
        for _ in range(20):
            alone.append(sampler.sample(values[1:2], [alone_row])[0].item())
            tokens = sampler.sample(values[[0, 1, 2]], [others[0], batched_row, others[1]])[0]
            batched.append(tokens.tolist()[1])
            spread.add(tokens.tolist()[0])
        return alone, batched, sorted(spread)

    alone, batched, spread = owner(run)
    assert alone == batched
    assert len(set(alone)) > 1  # it really samples
    assert len(spread) > 1


def test_top_k_one_is_the_argmax_even_when_sampling(owner: Owner) -> None:
    def run() -> tuple[list[int], list[int]]:
        values = logits(4, seed=2)
        params = [SamplingParams(temperature=1.5, top_k=1)] * 4
        return sample(params, values)[0], values.argmax(axis=-1).tolist()

    got, expected = owner(run)
    assert got == expected


def test_penalties_apply_to_their_own_row_only(owner: Owner) -> None:
    def run() -> list[int]:
        import mlx.core as mx

        values = mx.zeros((2, VOCAB))
        values[:, 7] = 5.0  # both rows prefer 7, which both prompts contain
        values[:, 8] = 4.0
        penalised = SamplingParams(temperature=0.0, repeat_penalty=2.0)
        return sample([penalised, GREEDY], values, prompts=[[7], [7]])[0]

    assert owner(run) == [8, 7]


def test_a_row_with_nan_is_flagged_alone(owner: Owner) -> None:
    def run() -> list[bool]:
        values = logits(3)
        values[1, 4] = float("nan")
        return sample([GREEDY, SamplingParams(temperature=0.7, seed=1), GREEDY], values)[1]

    assert owner(run) == [True, False, True]


def test_a_tiny_temperature_is_greedy(owner: Owner) -> None:
    def run() -> tuple[list[int], list[bool], list[int]]:
        values = logits(2, seed=9)
        tokens, finite = sample([SamplingParams(temperature=1e-40, seed=1)] * 2, values)
        return tokens, finite, values.argmax(axis=-1).tolist()

    tokens, finite, expected = owner(run)
    assert tokens == expected and finite == [True, True]


def test_out_of_range_params_are_refused_with_the_values() -> None:
    from inferd.backends.mlx_sampler import row_sampling

    with pytest.raises(BackendError, match=r"top_p must be in \(0, 1\], got 1.5"):
        row_sampling(SamplingParams(top_p=1.5), [1], VOCAB)
    with pytest.raises(BackendError, match="temperature must be >= 0"):
        row_sampling(SamplingParams(temperature=-1.0), [1], VOCAB)


def test_top_k_beyond_the_vocabulary_keeps_every_token(owner: Owner) -> None:
    def run() -> int:
        return len(sample([SamplingParams(temperature=0.8, top_k=10_000, seed=2)], logits(1))[0])

    assert owner(run) == 1


@pytest.mark.parametrize(("temperature", "kept"), [(1.0, {0, 1}), (2.0, {0, 1, 2})])
def test_min_p_keeps_what_the_torch_sampler_keeps(owner: Owner, temperature, kept) -> None:
    """min_p 0.5 of a 0.4 favourite, compared with the probabilities at the request's
    temperature, as the torch backend does (tests/test_torch_sampler.py): at 1 tokens 0
    and 1 (p >= 0.2); at 2 token 2 too (its ratio 0.375 becomes 0.61)."""
    params = SamplingParams(temperature=temperature, top_k=0, top_p=1.0, min_p=0.5)

    def run() -> set[int]:
        import mlx.core as mx

        probs = mx.full((VOCAB,), 0.2 / (VOCAB - 3))
        probs[:3] = mx.array([0.4, 0.25, 0.15])
        values = mx.broadcast_to(mx.log(probs)[None], (400, VOCAB))
        return {t for _ in range(5) for t in sample([params] * 400, values)[0]}

    assert owner(run) == kept
