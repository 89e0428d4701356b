"""int8 Linear layers on a CPU: int8 weights per output channel, int8 activations per token.

Each weight row has its own scale; each token's activations are quantized to int8 with
their own scale as they arrive (llama.cpp's q8_0 and vLLM's W8A8 do the same). The
integer products are exact, so a token's products never depend on the other tokens of
its step. (The float work between them must not either: a last-bit change there moves
an activation on a rounding boundary a whole step, which is why attention runs in
fixed blocks: docs/engine.md, "Batch invariance".) torch's `quantize_dynamic` (fbgemm) was measured
faster at 8+ rows, but its one activation scale per step ties every row to the others.

Two kernels compute the same int32 products (bit for bit, tested):

- `torch._int_mm`: the least work around the call, best for small weights.
- oneDNN's int8 matmul (`torch.ops.onednn.qlinear_pointwise`): weights prepacked in its
  blocked layout, activations as uint8 with zero point 128, the weight scales applied
  inside the kernel. About 25 us more per call, but 1.2x faster than `_int_mm` on a
  4864x896 weight at 8 rows and 1.9x on Qwen2.5's 151936x896 output projection
  (`benchmarks/bench_int8_kernels.py`). Used for weights of ONEDNN_MIN_BYTES and more,
  where the processor computes it exactly: without VNNI, oneDNN's uint8 x int8 path
  may saturate 16-bit partial sums, so one probe per process checks it against
  `_int_mm` on the extreme values and falls back if they differ.
"""

from __future__ import annotations

import functools
import logging

import torch
from torch import nn

log = logging.getLogger("inferd.torch")

ONEDNN_MIN_BYTES = 8 << 20  # below this the kernel's fixed cost outweighs its speed
_ZERO_POINT = 128  # int8 activations shifted into oneDNN's uint8 range


def quantize_rows(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A matrix as int8 rows and each row's float32 scale (its largest |value| / 127)."""
    matrix = matrix.detach().float()
    scale = matrix.abs().amax(dim=1).clamp(min=1e-8) / 127
    return torch.round(matrix / scale[:, None]).to(torch.int8), scale


class Int8Linear(nn.Module):
    """A Linear with int8 weights (a scale per output) and int8 activations per token."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        quantized, scale = quantize_rows(linear.weight)
        self.out_features, self.in_features = quantized.shape
        self.register_buffer("weight_scale", scale)
        bias = linear.bias
        self.register_buffer("bias", None if bias is None else bias.detach().float())
        self.uses_onednn = quantized.numel() >= ONEDNN_MIN_BYTES and onednn_int8_is_exact()
        self.onednn_in_graphs = self.uses_onednn and onednn_in_graphs()
        if self.uses_onednn:
            self.register_buffer("weight_packed", torch.ops.onednn.qlinear_prepack(quantized, None))
            self.register_buffer("weight_zero", torch.zeros(self.out_features, dtype=torch.long))
        else:
            # (in, out) as a transposed view: the layout _int_mm reads fastest at one row
            self.register_buffer("weight_t", quantized.t())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Called ~100-170 times per step on a 0.5B model: every op here costs a dispatch,
        # so the fewest ops and in-place ones where the tensor is new anyway.
        rows = x.reshape(-1, self.in_features)
        scale = rows.abs().amax(dim=1, keepdim=True).clamp_(min=1e-8).div_(127)
        out = self.product(self.kernel_input((rows / scale).round_()))
        out.mul_(scale)
        if self.bias is not None:
            out.add_(self.bias)
        return out.view(*x.shape[:-1], self.out_features)

    def kernel_input(self, quantized: torch.Tensor) -> torch.Tensor:
        """Rounded activations (rows, in_features), whole numbers in [-127, 127], as this
        layer's kernel takes them; oneDNN's shifted in place (the tensor is new anyway)."""
        if self.uses_onednn:
            return quantized.add_(_ZERO_POINT).to(torch.uint8)
        return quantized.to(torch.int8)

    def product(self, activations: torch.Tensor) -> torch.Tensor:
        """kernel_input's activations times the int8 weights, each output scaled by its
        weight scale (not yet by the activations' own): (rows, out_features) float32."""
        if self.uses_onednn:
            compiled = torch.compiler.is_compiling() and not self.onednn_in_graphs
            matmul = onednn_int8_matmul if compiled else _onednn_matmul
            return matmul(activations, self.weight_packed, self.weight_scale, self.weight_zero)
        return torch._int_mm(activations, self.weight_t).mul(self.weight_scale)


def _onednn_matmul(
    activations: torch.Tensor,
    packed: torch.Tensor,
    weight_scale: torch.Tensor,
    weight_zero: torch.Tensor,
) -> torch.Tensor:
    """(rows, in) uint8 (zero point 128) x packed int8 weights -> (rows, out) float32,
    each column multiplied by its weight scale."""
    return torch.ops.onednn.qlinear_pointwise(
        activations,
        1.0,
        _ZERO_POINT,
        packed,
        weight_scale,
        weight_zero,
        None,
        1.0,
        0,
        torch.float32,
        "none",
        [],
        "",
    )


@torch.library.custom_op("inferd::onednn_int8_matmul", mutates_args=())
def onednn_int8_matmul(
    activations: torch.Tensor,
    packed: torch.Tensor,
    weight_scale: torch.Tensor,
    weight_zero: torch.Tensor,
) -> torch.Tensor:
    """_onednn_matmul as an operator torch.compile calls as it is, not lowers (where
    onednn_in_graphs could not arrange that for oneDNN's operator itself)."""
    return _onednn_matmul(activations, packed, weight_scale, weight_zero)


@onednn_int8_matmul.register_fake
def _(
    activations: torch.Tensor,
    packed: torch.Tensor,
    weight_scale: torch.Tensor,
    weight_zero: torch.Tensor,
) -> torch.Tensor:
    return activations.new_empty((activations.shape[0], weight_scale.shape[0]), dtype=torch.float32)


@functools.cache
def onednn_in_graphs() -> bool:
    """Make torch.compile call oneDNN's int8 matmul as it is, the way inductor calls any
    operator it has no lowering for: from a C++ wrapper straight through the dispatcher.

    Inductor's own lowering of the operator serves PT2E quantization and wants the packed
    weight as a frozen constant, which it is not here; where this cannot be arranged (False),
    compiled graphs call the matmul through the custom operator onednn_int8_matmul instead,
    whose Python costs ~25-50 us a call: a one-row decode step of Qwen2.5-0.5B makes 24,
    and measured 1.07x faster without them (8 rows 1.05x; 2 cores, interleaved).
    Process-wide, as inductor's lowerings are one table; inferd compiles nothing that
    wants the other lowering."""
    try:
        from torch._inductor import lowering

        lowering.make_fallback(torch.ops.onednn.qlinear_pointwise.default, warn=False)
    except Exception as error:  # an inductor without this hook, or no oneDNN
        log.info("int8: compiled graphs call oneDNN's matmul through Python (%s)", error)
        return False
    return True


@functools.cache
def onednn_int8_is_exact() -> bool:
    """Whether oneDNN's int8 matmul runs here and matches `_int_mm` exactly, on the
    values that would saturate a 16-bit partial sum (checked once per process)."""
    try:
        generator = torch.Generator().manual_seed(0)
        weight = torch.randint(-127, 128, (64, 256), dtype=torch.int8, generator=generator)
        weight[:32] = 127  # 127 * 127 pairs: the sums a non-VNNI path would saturate
        activations = torch.randint(-127, 128, (4, 256), dtype=torch.int8, generator=generator)
        activations[:2] = 127
        scale = torch.ones(64)
        expected = torch._int_mm(activations, weight.t()).float()
        got = _onednn_matmul(
            (activations.int() + _ZERO_POINT).to(torch.uint8),
            torch.ops.onednn.qlinear_prepack(weight, None),
            scale,
            torch.zeros(64, dtype=torch.long),
        )
        exact = torch.equal(got, expected)
    except (RuntimeError, AttributeError) as error:  # no oneDNN in this torch build
        log.info("int8: oneDNN's int8 matmul is unavailable (%s); using torch._int_mm", error)
        return False
    if not exact:
        log.info("int8: oneDNN's int8 matmul is not exact on this CPU; using torch._int_mm")
    return exact
