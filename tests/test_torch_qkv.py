"""backends/torch_qkv.py: q, k and v from one stacked int8 matmul, bit for bit."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from transformers import Qwen2Config, Qwen2ForCausalLM

from inferd.backends.torch_int8 import Int8Linear
from inferd.backends.torch_int8_embedding import quantize_input_embeddings
from inferd.backends.torch_qkv import SharedProjection, share_qkv_projections
from inferd.backends.torch_quant import _replace_linears, quantize
from tests.tiny_models import tiny_model

pytestmark = pytest.mark.usefixtures("single_torch_thread")


class Projections(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q_proj = nn.Linear(32, 32, bias=True)
        self.k_proj = nn.Linear(32, 16, bias=True)
        self.v_proj = nn.Linear(32, 16, bias=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.q_proj(x), self.k_proj(x), self.v_proj(x)


def test_a_model_with_shared_projections_gives_the_same_logits_bit_for_bit():
    model = tiny_model(Qwen2ForCausalLM, Qwen2Config, attention="eager")
    separate = copy.deepcopy(model)
    _replace_linears(separate, Int8Linear, lambda linear: True)
    quantize_input_embeddings(separate)  # as quantize() does: only q/k/v differ
    shared = quantize(model, "int8")
    attention = shared.model.layers[0].self_attn
    assert isinstance(attention.k_proj, SharedProjection)  # Qwen2's biased q/k/v too
    ids = torch.tensor([[5, 17, 42, 7, 99, 3]])
    with torch.inference_mode():
        assert torch.equal(shared(ids).logits, separate(ids).logits)


def test_each_projection_is_its_own_linear_on_any_input():
    torch.manual_seed(0)
    block = Projections()
    separate = copy.deepcopy(block)
    _replace_linears(separate, Int8Linear, lambda linear: True)
    assert share_qkv_projections(block) == 1
    x, y = torch.randn(3, 32), torch.randn(3, 32)
    with torch.inference_mode():
        assert all(map(torch.equal, block(x), separate(x)))
        # called one by one, out of order, on different tensors: never a stale slice
        assert torch.equal(block.k_proj(y), separate.k_proj(y))
        assert torch.equal(block.q_proj(x), separate.q_proj(x))
        assert torch.equal(block.q_proj(y), separate.q_proj(y))
        assert torch.equal(block.v_proj(x), separate.v_proj(x))


def test_a_new_forward_of_the_block_never_reuses_the_last_result():
    torch.manual_seed(0)
    block = Projections()
    share_qkv_projections(block)
    x = torch.randn(2, 32)
    with torch.inference_mode():
        first = block.q_proj(x)  # k and v not taken yet: the result is kept...
        x.mul_(2)  # ...but changing x and calling the block again computes afresh
        q = block(x)[0]
    assert not torch.equal(first, q)
    assert torch.allclose(q, first * 2 - block.q_proj.shared.stacked.bias[:32], atol=0.05)


def test_mismatched_projections_are_left_alone():
    block = Projections()
    block.v_proj = nn.Linear(32, 16, bias=False)  # a bias on q and k only
    assert share_qkv_projections(block) == 0
    assert isinstance(block.q_proj, nn.Linear)
