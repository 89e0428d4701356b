"""backends/torch_gated_mlp.py: gate and up stacked, with the same output."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from transformers import Qwen2Config
from transformers.models.qwen2.modeling_qwen2 import Qwen2MLP

from inferd.backends.torch_gated_mlp import GatedMLP, stack_gated_mlps
from inferd.backends.torch_int8 import Int8Linear
from inferd.backends.torch_quant import _replace_linears, quantize

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def qwen_mlp() -> Qwen2MLP:
    torch.manual_seed(0)
    return Qwen2MLP(Qwen2Config(hidden_size=64, intermediate_size=160)).eval()


class Holder(nn.Module):
    def __init__(self, mlp: nn.Module) -> None:
        super().__init__()
        self.mlp = mlp


class NotGated(nn.Module):
    """The three Linears and an act_fn, but another forward: must be left alone."""

    def __init__(self) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(64, 160, bias=False)
        self.up_proj = nn.Linear(64, 160, bias=False)
        self.down_proj = nn.Linear(160, 64, bias=False)
        self.act_fn = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) + self.up_proj(x))


def test_a_gated_mlp_is_stacked_with_the_same_output():
    holder = Holder(qwen_mlp())
    original = copy.deepcopy(holder.mlp)
    assert stack_gated_mlps(holder) == 1
    assert isinstance(holder.mlp, GatedMLP)
    assert holder.mlp.gate_up.out_features == 320
    x = torch.randn(3, 5, 64)
    with torch.inference_mode():
        assert torch.allclose(holder.mlp(x), original(x), rtol=1e-4, atol=1e-6)


def test_int8_stacking_changes_no_result_bit():
    """Per-row weight scales: the stacked int8 weight is the two int8 weights stacked."""
    separate = quantize(Holder(qwen_mlp()), "int8")  # stacked by quantize
    unstacked = Holder(qwen_mlp())
    _replace_linears(unstacked, Int8Linear, lambda linear: True)
    assert isinstance(separate.mlp, GatedMLP) and not isinstance(unstacked.mlp, GatedMLP)
    x = torch.randn(4, 64)
    with torch.inference_mode():
        assert torch.equal(separate.mlp(x), unstacked.mlp(x))


def test_an_mlp_with_another_forward_is_left_alone():
    holder = Holder(NotGated())
    assert stack_gated_mlps(holder) == 0
    assert isinstance(holder.mlp, NotGated)
