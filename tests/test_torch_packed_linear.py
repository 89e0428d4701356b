"""backends/torch_packed_linear.py: fp32 Linears through oneDNN's prepacked matmul.

What it must keep: the Linear's numbers (to float32 rounding), a row's bits whatever
else shares its call (one row alone included), the same in compiled graphs, and the
model as it was where oneDNN cannot promise that.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from inferd.backends import torch_packed_linear, torch_quant
from inferd.backends.torch_packed_linear import PackedLinear, onednn_float_is_row_stable

pytestmark = pytest.mark.skipif(
    not onednn_float_is_row_stable(), reason="oneDNN's fp32 matmul is not row-stable here"
)


def linear(in_features: int = 96, out_features: int = 80, bias: bool = True) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(in_features, out_features, bias=bias)


@pytest.mark.parametrize("bias", [True, False])
def test_it_computes_the_linear(bias: bool) -> None:
    plain = linear(bias=bias)
    packed = PackedLinear(plain)
    x = torch.randn(2, 5, 96)
    with torch.inference_mode():
        got, want = packed(x), plain(x)
    assert got.shape == want.shape == (2, 5, 80)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_in_bf16_too() -> None:
    plain = linear().to(torch.bfloat16)
    packed = PackedLinear(plain)
    x = torch.randn(7, 96).to(torch.bfloat16)
    with torch.inference_mode():
        got, want = packed(x), plain(x)
        among = packed(torch.cat([x, x]))
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)
    assert torch.equal(got, among[:7]) and torch.equal(packed(x[:1]), got[:1])


def test_a_row_has_the_same_bits_in_any_call() -> None:
    # 2,048 wide: there oneDNN multiplies a lone row by another kernel (measured)
    packed = PackedLinear(linear(2048, 256))
    x = torch.randn(40, 2048, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        among = packed(x)
        for count in (1, 2, 3, 4, 7, 16, 39):
            assert torch.equal(packed(x[:count]), among[:count]), count
        for row in (0, 13, 39):  # alone, wherever it sat
            assert torch.equal(packed(x[row : row + 1]), among[row : row + 1]), row


def test_compiled_graphs_call_it_with_the_same_bits() -> None:
    packed = PackedLinear(linear(128, 64))
    compiled = torch.compile(packed, dynamic=True)
    with torch.inference_mode():
        for count in (1, 3, 8):
            x = torch.randn(count, 128)
            assert torch.equal(compiled(x), packed(x)), count


def test_fp32_on_a_cpu_packs_every_linear_and_keeps_a_tied_embedding(monkeypatch) -> None:
    monkeypatch.setattr(torch_packed_linear, "PACK_MIN_BYTES", 0)  # TinyTied's are tiny
    model = TinyTied()
    table = model.embed.weight.detach().clone()
    with torch.inference_mode():
        before = model(torch.tensor([[1, 2, 3]]))
        torch_quant.quantize(model, "fp32")
        after = model(torch.tensor([[1, 2, 3]]))
    assert isinstance(model.proj, PackedLinear) and isinstance(model.head, PackedLinear)
    assert torch.equal(model.embed.weight, table)  # the table the head was tied to
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_small_weights_stay_plain_linears() -> None:
    model = TinyTied()  # 32 x 32 and 50 x 32: below PACK_MIN_BYTES
    torch_quant.quantize(model, "fp32")
    assert type(model.proj) is nn.Linear and type(model.head) is nn.Linear


def test_bf16_packs_large_weights_and_pads_the_small_ones(monkeypatch) -> None:
    monkeypatch.setattr(torch_packed_linear, "PACK_MIN_BYTES", 32 * 50 * 2)  # the head only
    model = TinyTied().to(torch.bfloat16)
    torch_quant.quantize(model, "bf16")
    assert isinstance(model.head, PackedLinear)
    assert isinstance(model.proj, torch_quant.RowStableLinear)


def test_where_onednn_cannot_promise_it_the_linears_stay(monkeypatch) -> None:
    monkeypatch.setattr(torch_packed_linear, "PACK_MIN_BYTES", 0)
    monkeypatch.setattr(torch_quant, "onednn_float_is_row_stable", lambda dtype: False)
    model = TinyTied()
    torch_quant.quantize(model, "fp32")
    assert type(model.proj) is nn.Linear and type(model.head) is nn.Linear


def test_the_check_fails_where_rows_are_not_stable(monkeypatch) -> None:
    def unstable(rows, packed, bias):  # a kernel whose result depends on the row count
        out = torch.ops.mkldnn._linear_pointwise(rows, packed, bias, "none", [], "")
        return out if rows.shape[0] == 16 else out + 0.5  # the check's 16 rows stay right

    monkeypatch.setattr(torch_packed_linear, "_linear", unstable)
    torch_packed_linear.onednn_float_is_row_stable.cache_clear()
    try:
        assert not torch_packed_linear.onednn_float_is_row_stable(torch.float32)
        assert not torch_packed_linear.onednn_float_is_row_stable(torch.bfloat16)
    finally:
        torch_packed_linear.onednn_float_is_row_stable.cache_clear()


def test_other_processors_keep_their_linears(monkeypatch) -> None:
    monkeypatch.setattr(torch_packed_linear.platform, "machine", lambda: "arm64")
    torch_packed_linear.onednn_float_is_row_stable.cache_clear()
    try:
        assert not torch_packed_linear.onednn_float_is_row_stable(torch.float32)
    finally:
        torch_packed_linear.onednn_float_is_row_stable.cache_clear()


class TinyTied(nn.Module):
    """An embedding, a projection and an output head tied to the embedding."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(50, 32)
        self.proj = nn.Linear(32, 32)
        self.head = nn.Linear(32, 50, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.proj(self.embed(ids))))
