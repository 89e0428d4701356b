"""benchmarks/bench_bf16_rows.py: it times the engine's bf16 against plain bf16."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_bf16_rows import alternate, decoding, load, plain_bf16

from inferd.backends import torch_backend, torch_compiled_decode
from inferd.backends.torch_quant import RowStableLinear

pytestmark = pytest.mark.real_model


def linears(backend) -> list[torch.nn.Module]:
    return [m for m in backend._model.modules() if isinstance(m, torch.nn.Linear)]


def test_the_two_sides_are_the_engine_and_plain_bf16_and_both_decode(stories_path: Path):
    quantize = torch_backend.quantize
    stable = load(stories_path, compile_steps=False, threads=1)
    with plain_bf16():
        plain = load(stories_path, compile_steps=False, threads=1)
        assert torch_compiled_decode.precision_options(plain._model) == {}
    assert torch_backend.quantize is quantize  # put back
    assert all(isinstance(m, RowStableLinear) for m in linears(stable))
    assert linears(plain) and not any(isinstance(m, RowStableLinear) for m in linears(plain))
    batchers = {"stable": decoding(stable, 2), "plain": decoding(plain, 2)}
    medians = alternate(batchers, blocks=2, steps=2)
    assert set(medians) == {"stable", "plain"} and all(t > 0 for t in medians.values())
