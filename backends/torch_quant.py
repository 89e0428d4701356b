"""Weight formats for the torch backend: plain dtypes, and int8 / int4 weights on a CPU.

- "fp32", "fp16", "bf16": the weights in that dtype (CUDA's default is bf16); on a CPU,
  fp32's and bf16's Linears of 1 MiB and more multiply through oneDNN with prepacked
  weights (PackedLinear: fp32 2-4x MKL's rate here, bf16 1.3-1.6x its unpacked rate, and
  the same bits for a row in any batch), and bf16's smaller ones never multiply fewer
  than three rows (RowStableLinear).
- "int8" (the CPU default): int8 weights with a scale per output channel and each
  token's activations quantized to int8 with its own scale (backends/torch_int8.py),
  every Linear, the output projection included (for small models the largest); the
  gate and up projections of gated MLPs stacked into one (backends/torch_gated_mlp.py),
  and so are an attention block's q, k and v projections (backends/torch_qkv.py); the
  input embedding table in int8 rows too (backends/torch_int8_embedding.py): a quarter
  of its fp32 memory.
- "int4": groupwise 4-bit weights through torch's own CPU kernel
  (`_weight_int4pack_mm_for_cpu`, bf16 activations): half the bytes of int8 again.

Alternatives measured and left: torchao's eager int8 configs (2.4 and 9.1 tok/s against
int8's 23.6: torchao's fast paths need torch.compile) and `_weight_int8pack_mm` (fast at
one row with bf16 activations, slow as the batch grows).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from inferd.backends.base import BackendError
from inferd.backends.torch_gated_mlp import stack_gated_mlps
from inferd.backends.torch_int8 import Int8Linear
from inferd.backends.torch_int8_embedding import quantize_input_embeddings
from inferd.backends.torch_packed_linear import (
    PackedLinear,
    onednn_float_is_row_stable,
    product_of_rows,
    worth_packing,
)
from inferd.backends.torch_qkv import share_qkv_projections

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "int8": torch.float32,  # the dtype of the activations and everything not quantized
    "int4": torch.bfloat16,
}
QUANTIZATIONS = tuple(DTYPES)
# What the KV cache keeps, where it is not the activations' dtype. int8 keeps bf16 keys
# and values (llama.cpp keeps f16 by default): half the bytes a token holds and a decode
# step reads back; compiled, its attention measured 1.1-1.2x faster over 200-1,500 cached
# tokens (the rows are converted to float32 as they are gathered) and the same over 64.
_KV_CACHE_DTYPES = {"int8": torch.bfloat16}
CPU_ONLY = ("int8", "int4")
INT4_GROUP = 32  # weights per scale/zero pair
_INT4_INNER_K_TILES = 2


def default_quantization(device: torch.device, bf16_supported: bool) -> str:
    """What measured fastest: int8 on a CPU, bf16 (else fp16) on a GPU."""
    if device.type == "cpu":
        return "int8"
    return "bf16" if bf16_supported else "fp16"


def kv_cache_dtype(quantization: str) -> torch.dtype:
    """The dtype of a weight format's KV cache."""
    return _KV_CACHE_DTYPES.get(quantization, DTYPES[quantization])


def check_quantization(quantization: str, device: torch.device) -> None:
    if quantization not in DTYPES:
        allowed = ", ".join(repr(q) for q in QUANTIZATIONS)
        raise BackendError(
            f"torch backend: unsupported quantization {quantization!r}; allowed: {allowed}"
        )
    if quantization in CPU_ONLY and device.type != "cpu":
        raise BackendError(
            f"torch backend: quantization {quantization!r} runs on the CPU only; "
            f"use 'bf16' or 'fp16' on {device.type}"
        )


def quantize(model: nn.Module, quantization: str) -> nn.Module:
    """The model with its Linear layers in the weight format (replaced in place)."""
    if quantization == "int8":
        stack_gated_mlps(model)
        share_qkv_projections(model)
        _replace_linears(model, Int8Linear, lambda linear: True)
        if isinstance(model, PreTrainedModel):
            quantize_input_embeddings(model)
    elif quantization == "int4":
        # the packed layout wants whole groups along the input, 16s along the output
        _replace_linears(
            model,
            Int4Linear,
            lambda linear: linear.in_features % INT4_GROUP == 0 and linear.out_features % 16 == 0,
        )
    elif quantization in ("fp32", "bf16") and _device_type(model) == "cpu":
        if onednn_float_is_row_stable(DTYPES[quantization]):
            _replace_linears(model, PackedLinear, worth_packing)
            release_checkpoint(model)  # the packed copies are new memory; let the file go
        if quantization == "bf16":  # the Linears too small to pack
            _replace_linears(model, RowStableLinear, lambda linear: True)
    if quantization in CPU_ONLY:
        release_checkpoint(model)
    return model


class RowStableLinear(nn.Linear):
    """A bf16 Linear on a CPU whose rows round alike whatever else shares the call.

    oneDNN multiplies one or two bf16 rows by other kernels than it multiplies more with,
    kernels that sum the products in another order: a token's output then changed in its
    last bit between a step alone and a step beside others. Measured over 1,200-24,000
    random rows per shape, against the same rows among 1,200 or more: alone, 250 rows in
    1,200 of Qwen2.5-0.5B's down projection (4,864 wide) and 5-48 of stories260K's 64-wide
    layers differed; two at a time, 26 of 24,000 of its 32-wide key projection; three or
    more at a time, none of any. A call of fewer rows is padded with zero rows to
    MIN_ROWS, so greedy output batched stays the output alone (docs/engine.md, "Batch
    invariance"): a decode step 1.02x the time at one row, 1.00-1.01x at eight, eager or
    compiled (benchmarks/bench_bf16_rows.py)."""

    MIN_ROWS = 3

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__(linear.in_features, linear.out_features, bias=False, device="meta")
        self.weight = linear.weight  # the same Parameter: a tied output projection stays tied
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        product = functools.partial(F.linear, weight=self.weight, bias=self.bias)
        return product_of_rows(x, self.out_features, self.MIN_ROWS, product)


class Int4Linear(nn.Module):
    """A Linear whose weight is packed 4-bit with a scale and zero per group of INT4_GROUP."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        self.out_features, self.in_features = weight.shape
        packed, scales_and_zeros = _pack_int4(weight)
        self.register_buffer("packed", packed)
        self.register_buffer("scales_and_zeros", scales_and_zeros)
        bias = linear.bias
        self.register_buffer("bias", None if bias is None else bias.detach().to(torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).to(torch.bfloat16)
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(
            rows, self.packed, INT4_GROUP, self.scales_and_zeros
        )
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)


def release_checkpoint(model: nn.Module) -> None:
    """Copy the tensors the model still borrows from its checkpoint into memory of its
    own. transformers reads safetensors through a memory map and a tensor
    kept as it is (a norm's weight, a bias) keeps the whole file mapped: a quantized
    Qwen2.5-0.5B stayed at 2.8 GB resident for 0.64 GB of weights until its 1.9 GB fp32
    file was let go (0.96 GB after). Mapped storage is the kind torch cannot resize."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.layout is not torch.strided or tensor.is_mkldnn:
                continue  # oneDNN's packed weights: built here, never mapped
            if not tensor.untyped_storage().resizable():
                tensor.data = tensor.data.clone()


def _device_type(model: nn.Module) -> str:
    return next(model.parameters()).device.type


def _replace_linears(
    model: nn.Module, kind: type[nn.Module], fits: Callable[[nn.Linear], bool]
) -> None:
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and fits(child):
                setattr(module, name, kind(child))


def _pack_int4(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric 4-bit groups in the layout `_weight_int4pack_mm_for_cpu` expects."""
    out_features, in_features = weight.shape
    groups = weight.reshape(-1, INT4_GROUP)
    low, high = groups.amin(dim=1, keepdim=True), groups.amax(dim=1, keepdim=True)
    scales = ((high - low) / 15).clamp(min=1e-6)
    # the kernel computes (q - 8) * scale + zero, so the zero is the value of q = 8
    zeros = low + scales * 8
    q = ((groups - low) / scales).round().clamp(0, 15).to(torch.int32)
    q = q.reshape(out_features, in_features)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, _INT4_INNER_K_TILES)
    scales = scales.reshape(out_features, -1)
    zeros = zeros.reshape(out_features, -1)
    # (groups along the input, outputs, 2): each group's scale and zero side by side
    scales_and_zeros = torch.stack([scales, zeros], dim=2).transpose(0, 1).contiguous()
    return packed, scales_and_zeros.to(torch.bfloat16)
