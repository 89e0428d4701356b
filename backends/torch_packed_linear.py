"""fp32 and bf16 Linear layers on a CPU through oneDNN, weights prepacked in its blocked layout.

`F.linear` multiplies float32 through MKL, which on this project's AMD EPYC streamed a
4,864 x 896 weight at 17 GB/s for one row and 11 GB/s for four or eight, against a
46 GB/s read; oneDNN's matmul on the same weight prepacked reached 39, 45 and 50 GB/s
(`benchmarks/bench_fp32_linear.py`). Its rows are also stable: each row of a call of
two rows or more has the same bits as in any other such call, where MKL rounds one to
three rows differently from four or more. One row alone can take another kernel, so a
single row is padded with a zero row (as RowStableLinear pads bf16's).

bf16's `F.linear` is oneDNN's already, but reorders the weight on every call: prepacked,
a bf16 4,864 x 896 weight streamed 1.3-1.6x faster at 1-8 rows, and its rows are stable
from two on as well (bf16's smaller Linears keep RowStableLinear's padding to three).

Only weights of PACK_MIN_BYTES and more are packed: below, oneDNN's fixed cost per call
outweighs its rate. Each process checks once that oneDNN runs here and keeps its rows
stable (`onednn_float_is_row_stable`); where not, the model keeps its Linears as they are.
"""

from __future__ import annotations

import functools
import logging
import platform
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger("inferd.torch")

MIN_ROWS = 2  # a lone row may take another oneDNN kernel than two or more
# oneDNN's call costs ~12-15 us more than MKL's: a weight smaller than this (a tiny
# model's, a 0.5B model's k/v projection at 0.46 MB) is multiplied faster by F.linear.
PACK_MIN_BYTES = 1 << 20
X86_MACHINES = {"x86_64", "amd64", "i686", "x86"}


def worth_packing(linear: nn.Linear) -> bool:
    return linear.weight.numel() * linear.weight.element_size() >= PACK_MIN_BYTES


def _linear(rows: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(rows, packed, bias, "none", [], "")


class PackedLinear(nn.Module):
    """An fp32 or bf16 Linear whose weight is oneDNN's prepacked copy (the plain one is
    dropped, unless something else holds it: a tied output projection's embedding table)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.out_features, self.in_features = linear.weight.shape
        weight = linear.weight.detach()
        self.register_buffer("weight_packed", torch.ops.mkldnn._reorder_linear_weight(weight))
        bias = linear.bias
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        linear_pointwise_in_graphs()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        product = functools.partial(_linear, packed=self.weight_packed, bias=self.bias)
        return product_of_rows(x, self.out_features, MIN_ROWS, product)


def product_of_rows(
    x: torch.Tensor,
    out_features: int,
    min_rows: int,
    product: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """`product` of x's rows, flattened, padded with zero rows to `min_rows` at least (a
    kernel that multiplies fewer rows by another kernel then never sees them), the
    padding dropped again: (*x's leading shape, out_features)."""
    rows = x.reshape(-1, x.shape[-1])
    count = rows.shape[0]
    if torch.compiler.is_compiling():  # one graph for any count: no branch on it
        rows = F.pad(rows, (0, 0, 0, torch.sym_max(0, min_rows - count)))
    elif count < min_rows:
        rows = F.pad(rows, (0, 0, 0, min_rows - count))
    return product(rows)[:count].reshape(*x.shape[:-1], out_features)


@functools.cache
def linear_pointwise_in_graphs() -> bool:
    """Make torch.compile call oneDNN's matmul as it is. Inductor's own lowering of it
    serves weights frozen into the graph as constants, which these are not (the same
    arrangement as torch_int8.onednn_in_graphs; process-wide, and inferd compiles
    nothing that wants the other lowering)."""
    try:
        from torch._inductor import lowering

        lowering.make_fallback(torch.ops.mkldnn._linear_pointwise.default, warn=False)
    except Exception as error:  # an inductor without this hook
        log.info("fp32: compiled graphs cannot call oneDNN's matmul (%s)", error)
        return False
    return True


@functools.cache
def onednn_float_is_row_stable(dtype: torch.dtype = torch.float32) -> bool:
    """Whether oneDNN's matmul in `dtype` runs here and gives each row the same bits in
    calls of 2, 3, 5 and 16 rows, and a row padded to two the bits it has among 16
    (checked once per process and dtype, on a shape like a model's). x86 only: the rates
    above were measured there, and on ARM oneDNN's matmul runs other kernels."""
    if platform.machine().lower() not in X86_MACHINES:
        log.info("%s: Linears stay as they are on %s", dtype, platform.machine())
        return False
    try:
        generator = torch.Generator().manual_seed(0)
        weight = torch.randn(256, 512, generator=generator).to(dtype)
        rows = torch.randn(16, 512, generator=generator).to(dtype)
        packed = torch.ops.mkldnn._reorder_linear_weight(weight)
        among = _linear(rows, packed, None)
        calls = [_linear(rows[:count], packed, None) for count in (2, 3, 5)]
        alone = _linear(F.pad(rows[:1], (0, 0, 0, 1)), packed, None)[:1]
        stable = all(torch.equal(call, among[: len(call)]) for call in [*calls, alone])
        tolerance = 1e-4 if dtype == torch.float32 else 2e-2
        want = (rows.float() @ weight.float().t()).to(dtype)
        close = torch.allclose(among, want, rtol=tolerance, atol=tolerance)
    except (RuntimeError, AttributeError) as error:  # a torch without oneDNN
        log.info("%s: oneDNN's matmul is unavailable (%s); Linears stay", dtype, error)
        return False
    if not (stable and close):
        log.info("%s: oneDNN's rows are not stable here; Linears stay as they are", dtype)
    return stable and close and linear_pointwise_in_graphs()
