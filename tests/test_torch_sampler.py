"""backends/torch_sampler.py: every row of a step sampled at once, each with its own params."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from transformers import RepetitionPenaltyLogitsProcessor

from inferd.backends import torch_sampler
from inferd.backends.base import BackendError, SamplingParams, check_params
from inferd.backends.torch_sampler import Sampler, argmax_rows
from inferd.sequence import SequenceState

CPU = torch.device("cpu")
VOCAB = 50


def seq(params: SamplingParams, tokens: list[int] | None = None, seq_id: int = 0) -> SequenceState:
    state = SequenceState.new(seq_id, tokens or [1, 2, 3], params)
    state.sampler_state = Sampler(CPU, VOCAB).new_generator(params)
    return state


def logits(rows: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, VOCAB, generator=torch.Generator().manual_seed(seed)) * 3


def draw(seqs: list[SequenceState], scores: torch.Tensor, steps: int) -> list[list[int]]:
    """`steps` tokens per row, all rows sampled together each step."""
    out: list[list[int]] = [[] for _ in seqs]
    for step in range(steps):
        picks = Sampler(CPU, VOCAB).sample(scores + step, seqs)
        for tokens, (token, finite) in zip(out, picks, strict=True):
            assert finite
            tokens.append(token)
    return out


def test_greedy_rows_take_the_argmax():
    scores = logits(3)
    picks = Sampler(CPU, VOCAB).sample(scores, [seq(SamplingParams(temperature=0))] * 3)
    assert [token for token, _ in picks] == scores.argmax(-1).tolist()


def test_a_tiny_temperature_is_greedy_and_stays_finite():
    scores = logits(2)
    rows = [seq(SamplingParams(temperature=1e-40)), seq(SamplingParams(temperature=1e-6))]
    picks = Sampler(CPU, VOCAB).sample(scores, rows)
    assert picks == [(t, True) for t in scores.argmax(-1).tolist()]


def test_top_k_one_and_a_tiny_top_p_are_greedy():
    scores = logits(2)
    rows = [
        seq(SamplingParams(temperature=1.5, top_k=1, seed=1)),
        seq(SamplingParams(temperature=1.5, top_k=0, top_p=1e-6, seed=2)),
    ]
    assert draw(rows, scores, 1) == [[t] for t in scores.argmax(-1).tolist()]


def test_a_seeded_row_draws_the_same_alone_or_beside_any_other_row():
    params = SamplingParams(temperature=1.0, top_k=10, top_p=0.9, seed=42)
    scores = logits(1, seed=5)
    alone = draw([seq(params)], scores, 20)[0]
    neighbours = [
        SamplingParams(temperature=0.7, top_k=0, top_p=1.0, seed=1),  # the whole vocabulary
        SamplingParams(temperature=0.9, top_k=0, top_p=0.8, seed=3),  # top-p alone
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=1.3, top_k=40, top_p=0.5),  # unseeded
        SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.3, seed=4),
    ]
    for other in neighbours:
        together = draw([seq(other), seq(params)], torch.cat([logits(1, 9), scores]), 20)
        assert together[1] == alone
    assert len(set(alone)) > 1  # it really sampled


def test_samples_stay_within_top_k_and_follow_the_distribution():
    scores = torch.full((1, VOCAB), -5.0)
    scores[0, :3] = torch.tensor([2.0, 1.0, 0.0])
    row = seq(SamplingParams(temperature=1.0, top_k=3, top_p=1.0, seed=0))
    tokens = draw([row], scores, 3000)[0]
    counts = [tokens.count(t) / len(tokens) for t in range(3)]
    assert set(tokens) == {0, 1, 2}
    expected = torch.softmax(torch.tensor([2.0, 1.0, 0.0]), 0).tolist()
    assert all(abs(c - e) < 0.03 for c, e in zip(counts, expected, strict=True))


def frequencies(tokens: list[int], count: int) -> list[float]:
    return [tokens.count(t) / len(tokens) for t in range(count)]


def test_whole_vocabulary_rows_follow_the_distribution():
    """Neither top-k nor top-p (the OpenAI routes' defaults): a draw over all of it,
    without ordering it."""
    scores = torch.full((1, VOCAB), -9.0)
    scores[0, [7, 3, 40]] = torch.tensor([2.0, 1.0, 0.0])
    row = seq(SamplingParams(temperature=1.0, top_k=0, top_p=1.0, seed=3))
    tokens = draw([row], scores, 3000)[0]
    expected = torch.softmax(scores[0], 0)
    for token in (7, 3, 40):
        assert abs(tokens.count(token) / len(tokens) - expected[token].item()) < 0.03


def test_a_whole_vocabulary_draw_over_several_blocks_follows_the_distribution():
    """Beyond one CDF_BLOCK the draw goes by block, then within it: the blocks' last,
    partial one included, and never a token without probability."""
    vocab = 1500  # blocks of 512: two whole and a partial one
    scores = torch.full((1, vocab), -1e4)  # exp() of it is exactly 0
    scores[0, [5, 700, 1499]] = torch.tensor([0.0, 1.0, 0.5])
    row = seq(SamplingParams(temperature=1.0, top_k=0, top_p=1.0, seed=6))
    picks = [Sampler(CPU, vocab).sample(scores, [row])[0] for _ in range(3000)]
    assert all(finite for _, finite in picks)
    tokens = [token for token, _ in picks]
    assert set(tokens) == {5, 700, 1499}
    expected = torch.softmax(torch.tensor([0.0, 1.0, 0.5]), 0).tolist()
    for token, share in zip((5, 700, 1499), expected, strict=True):
        assert abs(tokens.count(token) / len(tokens) - share) < 0.03


@pytest.mark.parametrize("rounds", [1, 16])
def test_top_p_without_top_k_keeps_the_head_holding_top_p_of_all_the_mass(monkeypatch, rounds):
    """The nucleus is measured against the whole vocabulary's mass, whether a draw lands in
    it or the row sorts after its rejection rounds (1 here: every rejected row sorts).
    Renormalized over a head of 3, token 2 would fall outside top_p 0.7 (0.65 / 0.8 before
    it)."""
    monkeypatch.setattr(torch_sampler, "REJECTION_ROUNDS", rounds)
    probs = torch.full((VOCAB,), 0.2 / (VOCAB - 3))
    probs[:3] = torch.tensor([0.4, 0.25, 0.15])
    row = seq(SamplingParams(temperature=1.0, top_k=0, top_p=0.7, seed=4))
    tokens = draw([row], probs.log()[None], 3000)[0]
    assert set(tokens) == {0, 1, 2}
    expected = [0.4 / 0.8, 0.25 / 0.8, 0.15 / 0.8]
    assert all(abs(f - e) < 0.03 for f, e in zip(frequencies(tokens, 3), expected, strict=True))


def test_a_flat_distribution_s_nucleus_is_all_of_it():
    """Equally likely tokens: none is less likely than another, so all are in."""
    row = seq(SamplingParams(temperature=1.0, top_k=0, top_p=0.5, seed=5))
    tokens = draw([row], torch.zeros(1, VOCAB), 500)[0]
    assert len(set(tokens)) > 40  # nearly all of the 50 equally likely tokens


@pytest.mark.parametrize("rounds", [1, 16])
def test_a_top_p_row_draws_the_same_alone_or_beside_rows_that_draw_again(monkeypatch, rounds):
    """A row's rounds depend on its own logits and generator: beside rows with other
    nuclei (one that almost always draws again, one that sorts), its tokens are the same."""
    monkeypatch.setattr(torch_sampler, "REJECTION_ROUNDS", rounds)
    params = SamplingParams(temperature=2.0, top_k=0, top_p=0.9, seed=21)
    scores = logits(1, seed=11)
    alone = draw([seq(params)], scores, 30)[0]
    others = [
        SamplingParams(temperature=1.0, top_k=0, top_p=1e-6, seed=2),  # greedy, by rounds
        SamplingParams(temperature=2.0, top_k=0, top_p=0.99, seed=3),
    ]
    rows = [seq(others[0]), seq(params), seq(others[1])]
    together = draw(rows, torch.cat([logits(1, 12), scores, logits(1, 13)]), 30)
    assert together[1] == alone
    assert len(set(alone)) > 1
    assert set(together[0]) == {int(logits(1, 12).argmax())}


def test_the_repeat_penalty_matches_transformers():
    scores = logits(2)
    history = [[4, 9, 9, 17], [2, 3]]
    rows = [
        seq(SamplingParams(temperature=0, repeat_penalty=1.7), history[0]),
        seq(SamplingParams(temperature=0, repeat_penalty=1.0), history[1]),
    ]
    sampler = Sampler(CPU, VOCAB)
    penalised = sampler._penalise(scores, rows)
    reference = RepetitionPenaltyLogitsProcessor(1.7)(torch.tensor([history[0]]), scores[:1])
    assert torch.equal(penalised[0], reference[0])
    assert torch.equal(penalised[1], scores[1])


@pytest.mark.parametrize(
    ("top_k", "top_p"), [(40, 0.95), (0, 0.95), (0, 1.0)], ids=["top-k", "top-p", "whole"]
)
def test_a_non_finite_row_is_flagged_and_the_others_are_not(top_k, top_p):
    """In every kind of draw (a NaN row's top-p draws stop at once: none is rejected)."""
    scores = logits(3)
    scores[1, 7] = float("nan")
    sampled = SamplingParams(temperature=0.8, top_k=top_k, top_p=top_p)
    rows = [seq(SamplingParams(temperature=0)), seq(replace(sampled, seed=1))]
    rows.append(seq(replace(sampled, seed=2)))
    picks = Sampler(CPU, VOCAB).sample(scores, rows)
    assert [finite for _, finite in picks] == [True, False, True]
    assert picks[0][0] == int(scores[0].argmax())
    assert all(0 <= token < VOCAB for token, _ in picks)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", -0.1),
        ("temperature", float("nan")),
        ("top_k", -1),
        ("top_p", 0.0),
        ("min_p", -0.1),
        ("min_p", 1.5),
    ],
)
def test_out_of_range_params_are_named(field: str, value: float):
    with pytest.raises(BackendError, match=field):
        check_params(SamplingParams(**{field: value}))


def test_presence_and_frequency_penalties_count_the_recent_window():
    scores = torch.zeros(2, 8)
    history = [7] * 10 + [1, 2, 2, 3] * 16  # the 7s are older than the last 64 ids
    rows = [
        seq(SamplingParams(temperature=0, presence_penalty=0.5, frequency_penalty=1.0), history),
        seq(SamplingParams(temperature=0), [1, 2]),
    ]
    penalised = Sampler(CPU, 8)._penalise_occurrences(scores, rows)
    # presence once per id seen, frequency once per occurrence; the other row untouched
    assert penalised[0].tolist() == [0, -16.5, -32.5, -16.5, 0, 0, 0, 0]
    assert penalised[1].tolist() == [0.0] * 8


@pytest.mark.parametrize("width", [1024, 1000])  # chunked, and torch's argmax (not 128s)
def test_argmax_rows_is_torchs_argmax_ties_nans_and_all_minus_inf_included(width):
    generator = torch.Generator().manual_seed(0)
    values = torch.randint(0, 50, (6, width), generator=generator).float()  # many ties
    values[1, 700] = float("nan")
    values[1, 900] = float("nan")
    values[2] = float("-inf")
    values[3, :] = 7.0  # every position ties
    assert torch.equal(argmax_rows(values), torch.argmax(values, dim=-1))
    assert argmax_rows(values)[1] == 700
