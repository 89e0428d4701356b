"""What the machine and plain libraries do without inferd: memory bandwidth, the batch-1
bandwidth bound it implies, `model.generate`, and (optionally) llama.cpp in-process."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

# Bits read per weight at each precision. int8 keeps one scale per output row and int4 a
# scale per 32-weight group (as GGUF q4_0 does), hence 4.5 bits; both round to these.
BITS_PER_WEIGHT = {"fp32": 32.0, "fp16": 16.0, "bf16": 16.0, "int8": 8.0, "int4": 4.5}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True, slots=True)
class Bandwidth:
    """Best-of-N STREAM-style rates in GB/s (1e9 bytes), with the torch thread count used."""

    copy: float  # b = a: reads and writes one array each
    triad: float  # a = b + s*c: reads two arrays, writes one
    read: float  # sum(a): reads one array, as a decode step reads the weights
    threads: int

    @property
    def for_decode(self) -> float:
        """The rate a batch-1 decode step can hope for: it streams every weight in once and
        writes next to nothing, which is what the read kernel does."""
        return self.read


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_bandwidth(device: str = "cpu", megabytes: int = 1024, repeats: int = 5) -> Bandwidth:
    """Time large copies, triads and reductions with the current torch thread count.

    Each array must be well past the last-level cache (260 MB on the Xeon this was
    written on), or the figures are cache bandwidth, not memory bandwidth.
    """
    where = torch.device(device)
    count = megabytes * 2**20 // 4
    a, b, c = (torch.rand(count, device=where) for _ in range(3))
    nbytes = a.numel() * a.element_size()
    kernels = {
        "copy": (lambda: b.copy_(a), 2),
        "triad": (lambda: torch.add(b, c, alpha=3.0, out=a), 3),
        "read": (lambda: a.sum(), 1),
    }
    rates = {
        name: arrays * nbytes / best_seconds(kernel, where, repeats) / 1e9
        for name, (kernel, arrays) in kernels.items()
    }
    return Bandwidth(rates["copy"], rates["triad"], rates["read"], torch.get_num_threads())


def measure_read(device: str = "cpu", megabytes: int = 1024, repeats: int = 5) -> float:
    """The read rate alone (GB/s), as measure_bandwidth's read: cheap enough to take
    right beside a phase, where a shared machine's memory may have moved since the start."""
    where = torch.device(device)
    array = torch.rand(megabytes * 2**20 // 4, device=where)
    seconds = best_seconds(array.sum, where, repeats)
    return array.numel() * array.element_size() / seconds / 1e9


def best_seconds(kernel: Callable[[], object], where: torch.device, repeats: int) -> float:
    """The shortest of `repeats` timed runs of `kernel`, after one untimed."""
    kernel()  # first touch: page faults are not bandwidth
    best = float("inf")
    for _ in range(repeats):
        _sync(where)
        start = time.perf_counter()
        kernel()
        _sync(where)
        best = min(best, time.perf_counter() - start)
    return best


def bandwidth_bounds(weights: int, gigabytes_per_s: float) -> dict[str, float]:
    """Batch-1 decode tok/s if every weight is read once per token at the measured rate."""
    return {
        precision: gigabytes_per_s * 1e9 / (weights * bits / 8)
        for precision, bits in BITS_PER_WEIGHT.items()
    }


def _load_for_generate(model_dir: Path, precision: str, device: str) -> Any:
    """The model as plain transformers would run it at `precision`; int8 is torch's own
    dynamic quantization (fbgemm) of every Linear, the recipe issue #11 started from."""
    if precision in DTYPES:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=DTYPES[precision])
        return model.to(device).eval()
    if precision == "int8" and device == "cpu":
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    raise ValueError(f"plain generate has no {precision} recipe on {device}")


def generate_rate(
    model_dir: Path, precision: str, prompt: str, new_tokens: int, device: str = "cpu"
) -> float:
    """Greedy `model.generate` tokens/s (prefill included), after a short warm-up."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = _load_for_generate(model_dir, precision, device)
    ids = tokenizer(prompt, return_tensors="pt").to(device)
    options: Mapping[str, Any] = {"do_sample": False, "pad_token_id": tokenizer.eos_token_id}
    try:
        with torch.inference_mode():
            model.generate(**ids, max_new_tokens=4, min_new_tokens=4, **options)
            _sync(torch.device(device))
            start = time.perf_counter()
            out = model.generate(
                **ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **options
            )
            _sync(torch.device(device))
            elapsed = time.perf_counter() - start
    finally:
        del model
        gc.collect()
    return (out.shape[1] - ids["input_ids"].shape[1]) / elapsed


def llama_cpp_rate(gguf: Path | None, prompt: str, new_tokens: int, threads: int) -> float | str:
    """llama.cpp (llama-cpp-python) in-process tok/s, or why it was skipped."""
    if gguf is None:
        return "skipped: no --gguf given"
    try:
        from llama_cpp import Llama  # optional, never a dependency of inferd
    except ImportError:
        return "skipped: llama_cpp (llama-cpp-python) is not installed"
    llm = Llama(model_path=str(gguf), n_ctx=4096, n_threads=threads, verbose=False)
    llm.create_completion(prompt, max_tokens=4, temperature=0.0)
    start = time.perf_counter()
    reply = llm.create_completion(prompt, max_tokens=new_tokens, temperature=0.0)
    elapsed = time.perf_counter() - start
    return reply["usage"]["completion_tokens"] / elapsed
