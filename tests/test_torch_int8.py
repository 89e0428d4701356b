"""backends/torch_int8.py: per-token int8 activations, and its two kernels agreeing."""

from __future__ import annotations

import pytest
import torch
from torch._inductor.utils import run_and_get_code

from inferd.backends import torch_int8
from inferd.backends.torch_int8 import Int8Linear, onednn_int8_is_exact

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def int8_linear(linear: torch.nn.Linear, *, onednn: bool, monkeypatch) -> Int8Linear:
    """An Int8Linear forced onto one kernel (oneDNN from 1 byte, or never)."""
    monkeypatch.setattr(torch_int8, "ONEDNN_MIN_BYTES", 1 if onednn else 1 << 62)
    layer = Int8Linear(linear)
    assert layer.uses_onednn is onednn
    return layer


def test_int8_rows_do_not_depend_on_each_other():
    torch.manual_seed(0)
    layer = Int8Linear(torch.nn.Linear(64, 48))
    rows = torch.randn(5, 64) * torch.tensor([[1.0], [100.0], [0.01], [1.0], [3.0]])
    together = layer(rows)
    alone = torch.cat([layer(rows[i : i + 1]) for i in range(5)])
    assert torch.equal(together, alone)  # per-token scales: bit for bit


@pytest.mark.skipif(not onednn_int8_is_exact(), reason="oneDNN's int8 matmul is not exact here")
@pytest.mark.parametrize("rows", [1, 7, 64])
def test_the_onednn_kernel_gives_int_mm_results_bit_for_bit(rows, monkeypatch):
    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 320)
    small = int8_linear(linear, onednn=False, monkeypatch=monkeypatch)
    packed = int8_linear(linear, onednn=True, monkeypatch=monkeypatch)
    x = torch.randn(2, rows, 256) * 4
    x[0, 0] = 127.0  # a row of maxima: quantized to +127 throughout
    assert torch.equal(packed(x), small(x))


@pytest.mark.parametrize("onednn", [False, True])
def test_the_kernel_alone_is_the_integer_product_times_the_weight_scales(onednn, monkeypatch):
    if onednn and not onednn_int8_is_exact():
        pytest.skip("oneDNN's int8 matmul is not exact here")
    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 320, bias=False)
    layer = int8_linear(linear, onednn=onednn, monkeypatch=monkeypatch)
    assert layer.uses_onednn is onednn
    quantized = torch.randint(-127, 128, (3, 256)).float()
    weights, scales = torch_int8.quantize_rows(linear.weight)
    expected = (quantized.double() @ weights.double().t()).float() * scales
    got = layer.product(layer.kernel_input(quantized.clone()))
    assert torch.equal(got, expected)


@pytest.mark.skipif(not onednn_int8_is_exact(), reason="oneDNN's int8 matmul is not exact here")
def test_the_onednn_kernel_adds_the_bias_after_the_token_scale(monkeypatch):
    torch.manual_seed(0)
    linear = torch.nn.Linear(128, 96)
    layer = int8_linear(linear, onednn=True, monkeypatch=monkeypatch)
    x = torch.randn(3, 128) * 50
    error = (layer(x) - linear(x)).norm() / linear(x).norm()
    assert error < 0.02


def test_large_weights_take_the_onednn_kernel_where_it_is_exact(monkeypatch):
    monkeypatch.setattr(torch_int8, "ONEDNN_MIN_BYTES", 64 * 32)
    assert Int8Linear(torch.nn.Linear(64, 32)).uses_onednn is onednn_int8_is_exact()
    assert not Int8Linear(torch.nn.Linear(64, 31)).uses_onednn


def test_without_a_working_onednn_every_layer_takes_int_mm(monkeypatch):
    def unavailable(*args, **kwargs):
        raise RuntimeError("no oneDNN in this build")

    monkeypatch.setattr(torch_int8, "_onednn_matmul", unavailable)
    monkeypatch.setattr(torch_int8, "ONEDNN_MIN_BYTES", 1)
    onednn_int8_is_exact.cache_clear()
    try:
        assert onednn_int8_is_exact() is False
        layer = Int8Linear(torch.nn.Linear(64, 32))
        assert not layer.uses_onednn
        assert layer(torch.randn(2, 64)).shape == (2, 32)
    finally:
        onednn_int8_is_exact.cache_clear()


def test_a_saturating_kernel_is_not_used(monkeypatch):
    real = torch_int8._onednn_matmul

    def saturating(activations, *args):  # what a 16-bit partial sum would do
        return real(activations, *args).clamp(max=32767.0)

    monkeypatch.setattr(torch_int8, "_onednn_matmul", saturating)
    onednn_int8_is_exact.cache_clear()
    try:
        assert onednn_int8_is_exact() is False
    finally:
        onednn_int8_is_exact.cache_clear()


@pytest.mark.skipif(not onednn_int8_is_exact(), reason="oneDNN's int8 matmul is not exact here")
@pytest.mark.parametrize("in_graphs", [True, False])
def test_a_compiled_graph_calls_onednn_directly_or_through_the_custom_operator(
    in_graphs, monkeypatch
):
    torch.manual_seed(0)
    layer = int8_linear(torch.nn.Linear(256, 320), onednn=True, monkeypatch=monkeypatch)
    if in_graphs:
        assert layer.onednn_in_graphs  # this torch's inductor takes oneDNN's op as it is
    else:
        monkeypatch.setattr(layer, "onednn_in_graphs", False)
    compiled = torch.compile(layer, fullgraph=True, options={"cpp_wrapper": True})
    x = torch.randn(3, 256) * 4
    with torch.inference_mode():
        got, code = run_and_get_code(compiled, x)
        assert torch.equal(got, layer(x))
    source = "".join(code)
    assert ("qlinear_pointwise" in source) is in_graphs
    assert ("onednn_int8_matmul" in source) is not in_graphs
