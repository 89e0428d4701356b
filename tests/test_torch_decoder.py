"""backends/torch_decoder.py: the lean forward gives transformers' logits, or is not used."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from inferd.backends import torch_decoder
from inferd.backends.torch_attention import LAYOUT_KWARG, PrefillChunk, StepLayout
from inferd.backends.torch_decoder import LeanDecoder, lean_decoder
from inferd.backends.torch_kv_cache import KVCache
from inferd.backends.torch_quant import quantize
from tests.tiny_models import tiny_model

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def cache_for(model) -> KVCache:
    config = model.config
    return KVCache(
        num_layers=config.num_hidden_layers,
        kv_heads=config.num_key_value_heads,
        head_dim=config.hidden_size // config.num_attention_heads,
        num_blocks=4,
        block_size=4,
        dtype=torch.float32,
        device=torch.device("cpu"),
    )


@pytest.mark.parametrize(
    ("kind", "config_class", "extra"),
    [
        (LlamaForCausalLM, LlamaConfig, {}),
        (Qwen2ForCausalLM, Qwen2Config, {}),
        (Qwen3ForCausalLM, Qwen3Config, {"head_dim": 16}),  # q/k norms
    ],
)
@pytest.mark.parametrize("quantization", ["fp32", "int8"])
def test_each_family_gets_a_lean_decoder_with_transformers_logits(
    kind, config_class, extra, quantization
):
    model = quantize(tiny_model(kind, config_class, **extra), quantization)
    assert isinstance(lean_decoder(model, cache_for(model)), LeanDecoder)


def test_an_architecture_not_listed_keeps_transformers_forward(monkeypatch):
    model = tiny_model(Qwen2ForCausalLM, Qwen2Config)
    monkeypatch.setattr(torch_decoder, "LEAN_ARCHITECTURES", frozenset({"LlamaForCausalLM"}))
    assert lean_decoder(model, cache_for(model)) is None


def test_a_lean_pass_that_differs_from_transformers_is_not_used(monkeypatch):
    model = tiny_model(LlamaForCausalLM, LlamaConfig)
    real = LeanDecoder.__call__

    def off_by_a_little(self, *args):
        return real(self, *args) + 1e-6

    monkeypatch.setattr(LeanDecoder, "__call__", off_by_a_little)
    assert lean_decoder(model, cache_for(model)) is None


def probe_step(model, cache):
    """A 5-token prompt chunk after block 0 of `cache`: (ids, positions, layout factory)."""
    slots = torch.arange(5) + cache.block_size
    ids = torch.randint(model.config.vocab_size, (1, 5), generator=torch.Generator().manual_seed(3))

    def layout() -> StepLayout:
        step = StepLayout(cache, slots)
        step.prefills.append(PrefillChunk(0, 5, slots))
        return step

    return ids, torch.arange(5)[None], layout


@pytest.mark.parametrize("keep", [[1, 4], [3], []])
def test_the_last_layer_runs_its_output_half_on_the_rows_that_sample_only(keep):
    model = quantize(tiny_model(Qwen2ForCausalLM, Qwen2Config), "int8")
    cache = cache_for(model)
    decoder = lean_decoder(model, cache)
    assert decoder is not None
    ids, positions, layout = probe_step(model, cache)
    rows_seen: list[int] = []
    last_mlp = model.model.layers[-1].mlp
    hook = last_mlp.register_forward_hook(lambda _m, args, _o: rows_seen.append(args[0].shape[1]))
    keep_index = torch.tensor(keep, dtype=torch.long)
    with torch.inference_mode():
        got = decoder(ids, positions, keep_index, layout())
        hook.remove()
        expected = model(
            input_ids=ids,
            position_ids=positions,
            use_cache=False,
            logits_to_keep=torch.arange(5),
            **{LAYOUT_KWARG: layout()},
        ).logits[:, keep_index]
    assert torch.equal(got, expected)  # int8 rows are computed independently: exactly
    assert rows_seen == ([len(keep)] if keep else [])


@pytest.mark.parametrize("stages", [1, 2, 3, 5])
def test_a_pass_in_stages_pauses_between_them_and_gives_the_same_logits(stages):
    model = quantize(tiny_model(Qwen2ForCausalLM, Qwen2Config, num_hidden_layers=4), "int8")
    cache = cache_for(model)
    decoder = lean_decoder(model, cache)
    assert decoder is not None
    ids, positions, layout = probe_step(model, cache)
    keep = torch.tensor([2, 4])
    layers_run: list[int] = []
    hooks = [  # a layer's MLP is its last part
        layer.mlp.register_forward_hook(lambda _m, _a, _o, i=i: layers_run.append(i))
        for i, layer in enumerate(model.model.layers)
    ]
    pauses: list[list[int]] = []
    with torch.inference_mode():
        whole = decoder(ids, positions, keep, layout())
        layers_run.clear()
        parts = decoder.staged(ids, positions, keep, layout(), stages)
        while True:
            try:
                next(parts)
            except StopIteration as done:
                staged = done.value
                break
            pauses.append(list(layers_run))
    for hook in hooks:
        hook.remove()
    assert torch.equal(staged, whole)
    # at most `stages` parts of ceil(4 / stages) layers each
    per_part = -(-4 // stages)
    assert pauses == [list(range(done)) for done in range(per_part, 4, per_part)]
