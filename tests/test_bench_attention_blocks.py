"""benchmarks/bench_attention_blocks.py: the two attentions it times compute the same."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_attention_blocks import GROUP, KV_HEADS, chunk_case, decode_case


@pytest.mark.parametrize(("rows", "positions"), [(1, 70), (3, 200)])
def test_decode_rows_before_and_in_blocks_agree(rows, positions):
    before, blocks = decode_case(rows, positions)
    old = before().view(KV_HEADS, rows, GROUP, -1)  # the sums of every (kv head, row)
    torch.testing.assert_close(blocks(), old, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("tokens", "cached"), [(9, 0), (20, 100)])
def test_a_chunk_by_sdpa_and_in_blocks_agree(tokens, cached):
    sdpa, blocks = chunk_case(tokens, cached)
    expected = sdpa()[0].view(KV_HEADS, GROUP, tokens, -1).transpose(1, 2)
    torch.testing.assert_close(blocks(), expected, rtol=1e-4, atol=1e-5)
