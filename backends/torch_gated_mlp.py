"""The gate and up projections of a gated MLP as one Linear, for the int8 format.

Llama, Qwen, Mistral, Gemma and most decoder MLPs compute
`down_proj(act_fn(gate_proj(x)) * up_proj(x))`: two products of the same input. Stacked
into one Linear they take one activation quantization and one matmul instead of two,
and the stacked weight is large enough for oneDNN's faster int8 kernel
(backends/torch_int8.py). int8 weights have a scale per output row, so quantizing the
stacked weight gives exactly the two separate ones: the output does not change.

A module is rewritten only if it has that shape (the three Linears and an `act_fn`) and
the rewrite computes what its own forward does on a probe input, so an MLP with other
logic in its forward is left as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


class GatedMLP(nn.Module):
    """down(act(gate(x)) * up(x)), the gate and up projections stacked in `gate_up`."""

    def __init__(self, gate_up: nn.Module, down: nn.Module, act_fn: Callable, width: int) -> None:
        super().__init__()
        self.gate_up = gate_up
        self.down_proj = down
        self.act_fn = act_fn
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).split(self.width, dim=-1)
        return self.down_proj(self.act_fn(gate).mul_(up))


def stack_gated_mlps(model: nn.Module) -> int:
    """Rewrite every gated MLP of `model` as a GatedMLP (in place); how many were."""
    rewritten = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            fused = _stacked(child)
            if fused is not None:
                setattr(parent, name, fused)
                rewritten += 1
    return rewritten


def stack_linears(linears: Sequence[nn.Linear]) -> nn.Linear | None:
    """One Linear whose outputs are the given Linears' outputs side by side (their
    weights and biases concatenated); None unless they read the same input width and
    all or none have a bias. torch_qkv.py stacks q/k/v with it too."""
    first = linears[0]
    if len({linear.in_features for linear in linears}) != 1:
        return None
    if len({linear.bias is None for linear in linears}) != 1:
        return None
    stacked = nn.Linear(
        first.in_features,
        sum(linear.out_features for linear in linears),
        bias=first.bias is not None,
        device=first.weight.device,
        dtype=first.weight.dtype,
    )
    with torch.no_grad():
        stacked.weight.copy_(torch.cat([linear.weight for linear in linears]))
        if first.bias is not None:
            stacked.bias.copy_(torch.cat([linear.bias for linear in linears]))
    return stacked


def _stacked(module: nn.Module) -> GatedMLP | None:
    gate, up, down = (getattr(module, n, None) for n in ("gate_proj", "up_proj", "down_proj"))
    act_fn = getattr(module, "act_fn", None)
    if not (
        all(isinstance(linear, nn.Linear) for linear in (gate, up, down))
        and callable(act_fn)
        and gate.out_features == up.out_features
    ):
        return None
    stacked = stack_linears([gate, up])
    if stacked is None:
        return None
    fused = GatedMLP(stacked, down, act_fn, gate.out_features)
    return fused if _same_output(module, fused, gate) else None


def _same_output(original: nn.Module, fused: GatedMLP, gate: nn.Linear) -> bool:
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(2, gate.in_features, generator=generator)
    probe = probe.to(device=gate.weight.device, dtype=gate.weight.dtype)
    with torch.inference_mode():
        expected, got = original(probe), fused(probe)
    # the stacked matmul may sum in another order: equal up to rounding
    return expected.shape == got.shape and torch.allclose(expected, got, rtol=1e-3, atol=1e-5)
