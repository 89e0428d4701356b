"""Compiled RMSNorm and RoPE for mlx-lm models on MLX's CPU backend.

On a GPU, `mx.fast.rms_norm` and `mx.fast.rope` are one fused kernel each. MLX's CPU
backend has no such kernels: it builds both from basic operations, so a one-token decode
step of stories260K is ~690 graph nodes, each evaluated and scheduled on its own.
`mx.compile` fuses the element-wise runs among them (~450 nodes are left), which made a
decode step ~1.4x faster there, with the same bits (`benchmarks/bench_mlx_ops.py`). It
saves graph overhead, so a model whose step is its matmuls gains nothing.

So on the CPU backend the model's `nn.RMSNorm` and `nn.RoPE` layers are swapped for
subclasses that call compiled functions, one per setting, shared by the layers. The norm
is compiled shapeless: nothing in it depends on the input's shape, so one trace serves
every batch and prompt length. RoPE's positions do depend on it, so only one-position
inputs (decode steps) take its compiled path, traced once per batch size, with the offset
passed as an array so that a new position is not a new trace; prompt chunks take mlx's
own. On a GPU nothing is swapped, nor where a check at the first load finds that the
compiled layers do not give mlx's own bits (an older mlx).

Imported lazily (mlx may be missing).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import mlx.core as mx
import mlx.nn as nn

Compiled = Callable[..., mx.array]
log = logging.getLogger("inferd.mlx")


def uses_compiled_ops() -> bool:
    """Whether models run on MLX's CPU backend, the one without fused norm and RoPE."""
    return mx.default_device().type == mx.DeviceType.cpu


def compile_ops(model: nn.Module) -> int:
    """Swap the model's RMSNorm and RoPE layers (exactly those classes: subclasses and
    other RoPE variants compute something else) for compiled ones; returns how many.
    None where this mlx cannot run them as its own layers do (compiled_ops_agree)."""
    if not compiled_ops_agree():
        return 0
    swapped = 0
    for _, module in model.named_modules():
        for key in module.children():
            child = module[key]  # the stored value: children() copies lists
            items = child if isinstance(child, list) else [child]
            for index, item in enumerate(items):
                replacement = _compiled(item)
                if replacement is None:
                    continue
                swapped += 1
                if isinstance(child, list):
                    child[index] = replacement
                else:
                    setattr(module, key, replacement)
    return swapped


@functools.cache
def compiled_ops_agree() -> bool:
    """Whether the compiled layers give mlx's own layers' bits here, on a lone row's int
    position and on a batch's per-row positions (an mlx without array offsets, or
    without shapeless compiling, fails this; checked once per process)."""
    try:
        norm, rope = nn.RMSNorm(8), nn.RoPE(4)
        x = mx.arange(48, dtype=mx.float32).reshape(2, 3, 1, 8) / 7
        offsets = mx.array([3, 11])
        pairs = [
            (CompiledRMSNorm(norm)(x), norm(x)),
            (CompiledRoPE(rope)(x[:1], 5), rope(x[:1], 5)),
            (CompiledRoPE(rope)(x, offsets), rope(x, offsets)),
        ]
        agree = all(mx.array_equal(got, want).item() for got, want in pairs)
    except Exception as error:  # an older mlx: its own layers stay
        log.info("MLX: norm and RoPE stay uncompiled (%s: %s)", type(error).__name__, error)
        return False
    if not agree:
        log.info("MLX: norm and RoPE stay uncompiled (the compiled ones differ here)")
    return agree


def _compiled(module: Any) -> nn.Module | None:
    if type(module) is nn.RMSNorm:
        return CompiledRMSNorm(module)
    if type(module) is nn.RoPE:
        return CompiledRoPE(module)
    return None


class CompiledRMSNorm(nn.RMSNorm):
    """nn.RMSNorm (the same weight) through a compiled, shapeless function."""

    def __init__(self, norm: nn.RMSNorm) -> None:
        super().__init__(norm.weight.shape[0], norm.eps)
        self.weight = norm.weight
        self._norm = _rms_norm(norm.eps)  # looked up once, not at every call

    def __call__(self, x: mx.array) -> mx.array:
        return self._norm(x, self["weight"])


class CompiledRoPE(nn.RoPE):
    """nn.RoPE whose one-position calls run compiled."""

    def __init__(self, rope: nn.RoPE) -> None:
        super().__init__(rope.dims, rope.traditional, rope.base, rope.scale)
        self._rotate = _rope(rope.dims, rope.traditional, rope.base, rope.scale)

    def __call__(self, x: mx.array, offset: int | mx.array = 0) -> mx.array:
        if x.shape[-2] != 1:
            return super().__call__(x, offset)
        if not isinstance(offset, mx.array):
            offset = mx.array(offset)
        return self._rotate(x, offset)


@functools.cache
def _rms_norm(eps: float) -> Compiled:
    def rms_norm(x: mx.array, weight: mx.array) -> mx.array:
        return mx.fast.rms_norm(x, weight, eps)

    return mx.compile(rms_norm, shapeless=True)


@functools.cache
def _rope(dims: int, traditional: bool, base: float, scale: float) -> Compiled:
    def rope(x: mx.array, offset: mx.array) -> mx.array:
        return mx.fast.rope(x, dims, traditional=traditional, base=base, scale=scale, offset=offset)

    return mx.compile(rope)
