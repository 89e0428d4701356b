"""backends/torch_compiled_decode.py: decode steps through torch.compile, or eager ones."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters
from transformers import Qwen2Config, Qwen2ForCausalLM

from inferd.backends import torch_compiled_decode
from inferd.backends.torch_attention import StepLayout
from inferd.backends.torch_attention_blocks import padded_length
from inferd.backends.torch_compiled_decode import CompiledDecode, compiled_decode, probe_inputs
from inferd.backends.torch_decoder import LeanDecoder
from inferd.backends.torch_kv_cache import NULL_SLOT, KVCache
from inferd.backends.torch_quant import quantize
from tests.tiny_models import QWEN_FAMILIES, tiny_model

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def cache_for(model, num_blocks: int = 12) -> KVCache:
    config = model.config
    return KVCache(
        num_layers=config.num_hidden_layers,
        kv_heads=config.num_key_value_heads,
        head_dim=getattr(config, "head_dim", None)
        or config.hidden_size // config.num_attention_heads,
        num_blocks=num_blocks,
        block_size=4,
        dtype=torch.float32,
        device=torch.device("cpu"),
    )


def identity(function, **options):
    return function


@pytest.fixture(scope="module")
def compiled_qwen() -> tuple[LeanDecoder, KVCache, CompiledDecode]:
    """A tiny Qwen2 in int8 (both int8 kernels' paths), compiled once for the module."""
    model = quantize(tiny_model(Qwen2ForCausalLM, Qwen2Config), "int8")
    decoder, cache = LeanDecoder(model), cache_for(model)
    compiled = compiled_decode(decoder, cache)
    assert compiled is not None
    return decoder, cache, compiled


@pytest.mark.parametrize(("kind", "config_class", "extra"), QWEN_FAMILIES)
@pytest.mark.parametrize("quantization", ["fp32", "int8"])
def test_the_function_it_compiles_computes_the_lean_forward(
    kind, config_class, extra, quantization
):
    """The same layers, math and operations as LeanDecoder's decode rows (the attention
    is torch_attention.attend_decode_groups in both): uncompiled, the same logits bit
    for bit."""
    model = quantize(tiny_model(kind, config_class, **extra), quantization)
    decoder, cache = LeanDecoder(model), cache_for(model)
    plain = CompiledDecode(decoder, cache, compiler=identity)
    with torch.inference_mode():
        for lengths, split in (((5,), 0), ((3, 9, 6), 0), ((3, 6, 9), 2)):
            inputs = probe_inputs(decoder, cache, lengths, split)
            expected, got = decoder(*inputs), plain(*inputs)
            assert torch.equal(got, expected)


def test_compiled_logits_are_the_eager_ones_up_to_rounding(compiled_qwen):
    decoder, cache, compiled = compiled_qwen
    with torch.inference_mode():
        inputs = probe_inputs(decoder, cache, (4, 7))
        expected, got = decoder(*inputs), compiled(*inputs)
    assert ((got - expected).norm() / expected.norm()).item() < 0.05
    assert torch.equal(got.argmax(-1), expected.argmax(-1))


def test_one_graph_serves_any_number_of_rows_and_a_row_alone_as_in_a_batch(compiled_qwen):
    decoder, cache, compiled = compiled_qwen
    graphs = counters["stats"]["unique_graphs"]
    with torch.inference_mode():
        first = probe_inputs(decoder, cache, (6,))
        alone = compiled(*first)
        ids, positions, keep, layout = probe_inputs(decoder, cache, (6, 3, 11, 2))
        ids[0, 0] = first[0][0, 0]  # the same token at the same position over the same keys
        batch = compiled(ids, positions, keep, layout)
        compiled(*probe_inputs(decoder, cache, (2, 2)))
    assert counters["stats"]["unique_graphs"] == graphs  # compiled at load, for all of these
    assert torch.equal(batch[0, 0], alone[0, 0])


def test_rows_in_two_length_groups_run_the_second_graph_compiled_at_load(compiled_qwen):
    """Decode rows split by length (torch_attention.decode_split) take a graph of their
    own, compiled and probed at load: the logits of the same rows in one group, up to
    the rounding of their padding, for any split."""
    decoder, cache, compiled = compiled_qwen
    graphs = counters["stats"]["unique_graphs"]
    with torch.inference_mode():
        lengths = (2, 3, 9, 12)
        one = compiled(*probe_inputs(decoder, cache, lengths))
        for split in (1, 2, 3):
            inputs = probe_inputs(decoder, cache, lengths, split)
            assert inputs[3].decode_tail_slots is not None
            two = compiled(*inputs)
            assert ((two - one).norm() / one.norm()).item() < 1e-3
            assert torch.equal(two.argmax(-1), one.argmax(-1))
            eager = decoder(*inputs)
            assert ((two - eager).norm() / eager.norm()).item() < 0.05
    assert counters["stats"]["unique_graphs"] == graphs


def alone_as_in(batch_inputs, row: int):
    """Row `row` of a probe step's inputs as a step of its own: the same token, position
    and cached keys and values (its slots in the batch's layout), nothing beside it."""
    ids, positions, _, layout = batch_inputs
    start = 0
    for slots, mask in layout.decode_groups():
        if row < start + slots.shape[0]:
            own = slots[row - start][mask[0, row - start, 0] == 0]
            break
        start += slots.shape[0]
    padded = padded_length(own.shape[0])
    alone = StepLayout(layout.cache, own[-1:].clone())
    alone.num_decode = 1
    alone.decode_slots = torch.cat([own, own.new_full((padded - own.shape[0],), NULL_SLOT)])[None]
    alone.decode_mask = torch.full((1, 1, 1, padded), float("-inf"), dtype=layout.cache.dtype)
    alone.decode_mask[..., : own.shape[0]] = 0
    one = slice(row, row + 1)
    return ids[:, one].clone(), positions[:, one].clone(), torch.arange(1), alone


def test_a_row_gets_the_same_logits_alone_and_in_any_group_on_two_threads():
    """What production runs (2 threads on the CI machine and the benchmark's): every row of
    a step, in one group or in either of two, gets the very logits it gets alone."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = quantize(tiny_model(Qwen2ForCausalLM, Qwen2Config), "int8")
        decoder, cache = LeanDecoder(model), cache_for(model)
        compiled = compiled_decode(decoder, cache)
        assert compiled is not None
        with torch.inference_mode():
            for lengths, split in (((6, 3, 11, 2), 0), ((2, 3, 9, 12), 2), ((2, 3, 9, 12), 1)):
                inputs = probe_inputs(decoder, cache, lengths, split)
                batch = compiled(*inputs)
                for row in range(len(lengths)):
                    alone = compiled(*alone_as_in(inputs, row))
                    assert torch.equal(batch[0, row], alone[0, 0]), (lengths, split, row)
    finally:
        torch.set_num_threads(threads)


def test_a_compiler_that_fails_leaves_eager_decoding(monkeypatch, caplog):
    model = tiny_model(Qwen2ForCausalLM, Qwen2Config)

    def broken(function, **options):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch_compiled_decode.torch, "compile", broken)
    assert compiled_decode(LeanDecoder(model), cache_for(model)) is None
    assert "no C++ compiler" in caplog.text


def test_a_graph_the_cpp_wrapper_cannot_take_is_compiled_without_it(monkeypatch, caplog):
    model = tiny_model(Qwen2ForCausalLM, Qwen2Config)
    asked: list[dict] = []

    def no_cpp_wrapper(function, **kwargs):
        asked.append(kwargs["options"])
        if kwargs["options"].get("cpp_wrapper"):
            raise RuntimeError("the C++ wrapper cannot call this operator")
        return function  # compiles nothing: the eager loops, which pass the probe

    monkeypatch.setattr(torch_compiled_decode.torch, "compile", no_cpp_wrapper)
    assert compiled_decode(LeanDecoder(model), cache_for(model)) is not None
    assert [options.get("cpp_wrapper", False) for options in asked] == [True, False]
    assert "compiling it without cpp_wrapper, size_asserts" in caplog.text


def test_a_graph_that_differs_from_eager_is_not_used(monkeypatch, caplog):
    model = tiny_model(Qwen2ForCausalLM, Qwen2Config)
    monkeypatch.setattr(torch_compiled_decode, "PROBE_TOLERANCE", -1.0)
    assert compiled_decode(LeanDecoder(model), cache_for(model)) is None
    assert "the compiled decode step differs from eager" in caplog.text


def test_a_cache_without_room_for_the_probe_is_not_compiled():
    model = tiny_model(Qwen2ForCausalLM, Qwen2Config)
    assert compiled_decode(LeanDecoder(model), cache_for(model, num_blocks=4)) is None


@pytest.mark.parametrize(
    ("quantization", "emulated"), [("bf16", True), ("fp32", None), ("int8", None)]
)
def test_half_precision_graphs_round_every_operation_as_eager_does(quantization, emulated):
    """bf16's decode and prompt graphs fuse differently; rounding each result to bf16 as
    the eager operations do keeps a token's keys the same bits through either."""
    model = tiny_model(Qwen2ForCausalLM, Qwen2Config)
    if quantization == "bf16":
        model = model.to(torch.bfloat16)
    model = quantize(model, quantization)
    given: list[dict] = []

    def recording(function, **options):
        given.append(options["options"])
        return function

    torch_compiled_decode.compiled_for(model, torch_compiled_decode.decode_layers, recording)
    assert given[0].get("emulate_precision_casts") is emulated
