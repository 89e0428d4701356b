"""The int8 matmuls of a one-row decode step alone: how far inferd's kernels go here.

The model is quantized as the engine quantizes it (backends/torch_quant.py: q/k/v and
gate/up stacked, the output projection in int8), and every int8 Linear's kernel is
called once per pass on one row of ready-quantized activations, in the model's order,
with nothing between the calls: no activation quantization, attention, norms, graph
wrapper or sampler. A pass's time is the least a one-row int8 step can take with these
kernels, so beside the bandwidth bound it splits one stream's gap to the bound into the
kernels' share (how far below the read rate they stream the weights) and the rest of
the step's.
"""

from __future__ import annotations

import gc
import statistics
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from inferd.backends.torch_int8 import Int8Linear
from inferd.backends.torch_quant import quantize


def int8_layers(model_dir: Path) -> list[Int8Linear]:
    """The model's int8 Linears, quantized as the engine quantizes it."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.inference_mode():
        model = quantize(model, "int8")
    layers = [m for m in model.modules() if isinstance(m, Int8Linear)]
    del model
    gc.collect()
    return layers


def matmul_pass_seconds(layers: list[Int8Linear], repeats: int = 20) -> float:
    """Median seconds of one pass of every layer's kernel at one row (after two unmeasured
    passes: the first touch of the weights and oneDNN's first-call setup)."""
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        inputs = [
            layer.kernel_input(
                torch.randint(-127, 128, (1, layer.in_features), generator=generator).float()
            )
            for layer in layers
        ]
        passes = []
        for index in range(repeats + 2):
            start = time.perf_counter()
            for layer, activations in zip(layers, inputs, strict=True):
                layer.product(activations)
            if index >= 2:
                passes.append(time.perf_counter() - start)
    return statistics.median(passes)
