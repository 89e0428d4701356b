"""backends/torch_compiled_prefill.py: prompt chunks through compiled layer halves."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters
from transformers import Qwen2Config, Qwen2ForCausalLM

from inferd.backends import torch_compiled_decode
from inferd.backends.torch_compiled_prefill import (
    compiled_prefill,
    prefill_probe_inputs,
    with_compiled_halves,
)
from inferd.backends.torch_decoder import LeanDecoder
from inferd.backends.torch_quant import quantize
from tests.test_torch_compiled_decode import cache_for, identity
from tests.tiny_models import QWEN_FAMILIES, tiny_model

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.mark.parametrize(("kind", "config_class", "extra"), QWEN_FAMILIES)
@pytest.mark.parametrize("quantization", ["fp32", "int8"])
def test_the_functions_it_compiles_compute_the_lean_forward_exactly(
    kind, config_class, extra, quantization
):
    model = quantize(tiny_model(kind, config_class, **extra), quantization)
    decoder, cache = LeanDecoder(model), cache_for(model)
    plain = with_compiled_halves(decoder, compiler=identity)
    with torch.inference_mode():
        for tokens in (3, 10):
            inputs = prefill_probe_inputs(decoder, cache, tokens)
            assert torch.equal(plain(*inputs), decoder(*inputs))


def test_one_graph_pair_serves_any_number_of_tokens_close_to_eager():
    model = quantize(tiny_model(Qwen2ForCausalLM, Qwen2Config), "int8")
    decoder, cache = LeanDecoder(model), cache_for(model)
    compiled = compiled_prefill(decoder, cache)
    assert compiled is not None
    graphs = counters["stats"]["unique_graphs"]
    with torch.inference_mode():
        for tokens in (2, 5, 16):  # a step with a prompt chunk runs 2 tokens at least
            inputs = prefill_probe_inputs(decoder, cache, tokens)
            expected, got = decoder(*inputs), compiled(*inputs)
            assert ((got - expected).norm() / expected.norm()).item() < 0.05
        # the last layer's output half runs on the rows that sample: one, or none
        ids, positions, keep, layout = prefill_probe_inputs(decoder, cache, 5)
        both = compiled(ids, positions, keep, layout)
        assert torch.equal(compiled(ids, positions, keep[1:], layout), both[:, 1:])
        assert compiled(ids, positions, keep[:0], layout).shape == (1, 0, both.shape[-1])
    assert counters["stats"]["unique_graphs"] == graphs  # compiled at load, for all sizes


def test_a_graph_that_differs_from_eager_is_not_used(monkeypatch, caplog):
    model = tiny_model(Qwen2ForCausalLM, Qwen2Config)
    monkeypatch.setattr(torch_compiled_decode, "PROBE_TOLERANCE", -1.0)
    assert compiled_prefill(LeanDecoder(model), cache_for(model)) is None
    assert "the compiled prefill step differs from eager" in caplog.text


def test_a_compiler_that_fails_leaves_eager_prefill(monkeypatch, caplog):
    model = tiny_model(Qwen2ForCausalLM, Qwen2Config)

    def broken(function, **options):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch_compiled_decode.torch, "compile", broken)
    assert compiled_prefill(LeanDecoder(model), cache_for(model)) is None
    assert "no C++ compiler" in caplog.text
