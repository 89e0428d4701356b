"""backends/torch_attention_blocks.py: a query's attention is the same bits however its
row is padded, whatever rows share its call, and however its prompt is chunked.

On Qwen2.5-0.5B's heads (14 over 2 kv heads of 64) and stories260K's (8 over 4 of 8).
These are properties of the BLAS under torch as much as of the code: they are checked
on the machine the suite runs on.
"""

from __future__ import annotations

import random

import pytest
import torch

from inferd.backends.torch_attention_blocks import (
    KEY_BLOCK,
    attend_chunk,
    attend_rows,
    padded_length,
)

SHAPES = {"qwen2.5-0.5b": (2, 7, 64), "stories260K": (4, 2, 8)}  # kv heads, group, head_dim


def causal_mask(offset: int, tokens: int, length: int) -> torch.Tensor:
    """(tokens, length) 0 / -inf: query i at position offset + i sees positions <= it."""
    visible = torch.arange(length)[None, :] <= torch.arange(offset, offset + tokens)[:, None]
    return torch.zeros(tokens, length).masked_fill(~visible, float("-inf"))


def row_mask(lengths: list[int], length: int) -> torch.Tensor:
    """(1, rows, 1, length) 0 / -inf: row r sees its first lengths[r] positions."""
    visible = torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]
    return torch.zeros(visible.shape).masked_fill(~visible, float("-inf"))[None, :, None]


def blocks(tensor: torch.Tensor) -> torch.Tensor:
    """(kv, rows, length, d) keys or values as attend_rows takes them, in whole blocks."""
    return tensor.unflatten(2, (-1, KEY_BLOCK))


def test_padded_length_rounds_up_to_whole_blocks():
    assert [padded_length(n) for n in (1, KEY_BLOCK, KEY_BLOCK + 1)] == [
        KEY_BLOCK,
        KEY_BLOCK,
        2 * KEY_BLOCK,
    ]


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_a_decode_row_is_the_same_bits_alone_and_among_longer_rows(shape):
    kv_heads, group, head_dim = shape
    rng = random.Random(0)
    torch.manual_seed(0)
    for _ in range(30):
        length = rng.randint(1, 700)
        others = [rng.randint(1, 1500) for _ in range(rng.randint(1, 6))]
        lengths = [*others, length]
        rng.shuffle(lengths)
        row = lengths.index(length)
        padded = padded_length(max(lengths))
        query = torch.randn(kv_heads, len(lengths), group, head_dim)
        keys = torch.randn(kv_heads, len(lengths), padded, head_dim)
        values = torch.randn(kv_heads, len(lengths), padded, head_dim)
        together = attend_rows(query, blocks(keys), blocks(values), row_mask(lengths, padded))[
            :, row
        ]

        own = padded_length(length)
        alone = attend_rows(
            query[:, row : row + 1],
            blocks(keys[:, row : row + 1, :own]),
            blocks(values[:, row : row + 1, :own]),
            row_mask([length], own) if length != own else None,
        )[:, 0]
        assert torch.equal(together, alone), (length, lengths)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_prompt_chunked_anywhere_attends_as_the_whole_prompt(shape, dtype):
    """Each chunk over the keys up to its own end (as the cache holds them then), padded to
    its own whole blocks: the same bits as the prompt in one chunk."""
    kv_heads, group, head_dim = shape
    rng = random.Random(1)
    torch.manual_seed(1)
    for _ in range(20):
        tokens = rng.randint(2, 600)
        query = torch.randn(kv_heads, tokens, group, head_dim, dtype=dtype)
        keys = torch.randn(kv_heads, padded_length(tokens), head_dim, dtype=dtype)
        values = torch.randn(kv_heads, padded_length(tokens), head_dim, dtype=dtype)
        whole = attend_chunk(query, keys, values, causal_mask(0, tokens, padded_length(tokens)))
        cuts = sorted(rng.sample(range(1, tokens), rng.randint(1, min(4, tokens - 1))))
        for start, end in zip([0, *cuts], [*cuts, tokens], strict=True):
            length = padded_length(end)
            keys_so_far = torch.cat(
                [keys[:, :end], keys.new_zeros(kv_heads, length - end, head_dim)], 1
            )
            values_so_far = torch.cat(
                [values[:, :end], values.new_zeros(kv_heads, length - end, head_dim)], 1
            )
            chunk = attend_chunk(
                query[:, start:end],
                keys_so_far,
                values_so_far,
                causal_mask(start, end - start, length),
            )
            assert torch.equal(chunk, whole[:, start:end]), (tokens, cuts, start)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_a_decode_row_computes_what_its_position_computes_in_a_prompt_chunk(shape):
    """So a prompt's last token run as a decode row (a one-token chunk), or a sequence
    recomputed after preemption, gets the bits it had."""
    kv_heads, group, head_dim = shape
    rng = random.Random(2)
    torch.manual_seed(2)
    for _ in range(20):
        tokens = rng.randint(2, 400)
        length = padded_length(tokens)
        query = torch.randn(kv_heads, tokens, group, head_dim)
        keys = torch.randn(kv_heads, length, head_dim)
        values = torch.randn(kv_heads, length, head_dim)
        chunk = attend_chunk(query, keys, values, causal_mask(0, tokens, length))
        position = rng.randrange(tokens)
        own = padded_length(position + 1)
        row = attend_rows(
            query[:, position : position + 1],
            blocks(keys[:, None, :own]),
            blocks(values[:, None, :own]),
            row_mask([position + 1], own),
        )
        assert torch.equal(row[:, 0, :], chunk[:, position]), (tokens, position)


def new_prompt(tokens: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(query, keys, values, causal mask) of a prompt of `tokens` on Qwen2.5-0.5B's heads."""
    kv_heads, group, head_dim = SHAPES["qwen2.5-0.5b"]
    length = padded_length(tokens)
    query = torch.randn(kv_heads, tokens, group, head_dim)
    keys, values = torch.randn(2, kv_heads, length, head_dim)
    return query, keys, values, causal_mask(0, tokens, length)


def test_a_chunk_too_large_for_its_scores_runs_in_parts_with_the_same_bits():
    torch.manual_seed(4)
    query, keys, values, mask = new_prompt(300)
    whole = attend_chunk(query, keys, values, mask)
    kv_heads, _, group, _ = query.shape
    seven_tokens = kv_heads * group * padded_length(300) * 7  # the scores of 7 tokens: 43 parts
    parts = attend_chunk(query, keys, values, mask, max_scores=seven_tokens)
    assert torch.equal(parts, whole)


def test_the_results_are_attention():
    """The blocks add up to softmax(q k^T) v, as scaled_dot_product_attention gives it."""
    torch.manual_seed(3)
    query, keys, values, mask = new_prompt(100)
    kv_heads, tokens, group, head_dim = query.shape
    got = attend_chunk(query, keys, values, mask)
    expected = torch.nn.functional.scaled_dot_product_attention(
        query.permute(0, 2, 1, 3).reshape(1, kv_heads * group, tokens, head_dim),
        keys[None, :, :tokens],
        values[None, :, :tokens],
        is_causal=True,
        scale=1.0,
        enable_gqa=True,
    )
    expected = expected[0].view(kv_heads, group, tokens, head_dim).transpose(1, 2)
    torch.testing.assert_close(got, expected)
