"""transformers' own continuous batching against inferd's torch engine, same workload.

Both in fp32 on one thread, in one process, alternating: `count` requests of 64 prompt
tokens, `new` greedy tokens each, all submitted at once. Reports generated tokens/s of
each (best of two) and whether their greedy tokens agree.

    python benchmarks/bench_cb_compare.py ../shared/models/stories260K 8 32
    python benchmarks/bench_cb_compare.py <a random Qwen2.5-0.5B dir> 8 32
"""

from __future__ import annotations

import sys
import time
import warnings

import torch
from transformers import AutoModelForCausalLM, GenerationConfig
from transformers.generation.configuration_utils import ContinuousBatchingConfig
from transformers.utils import logging as hf_logging

from inferd.backends.base import SamplingParams
from inferd.backends.torch_backend import EngineOptions, TorchBackend

Tokens = list[list[int]]


def transformers_cb(path: str, prompts: Tokens, new: int) -> tuple[float, Tokens]:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    config = GenerationConfig(max_new_tokens=new, do_sample=False, eos_token_id=-1)
    # sized for a CPU by hand: the defaults are sized from GPU memory
    batching = ContinuousBatchingConfig(
        page_size=32, num_blocks=256, max_batch_tokens=256, use_cuda_graph=False
    )
    start = time.perf_counter()
    out = model.generate_batch(
        prompts, generation_config=config, continuous_batching_config=batching, warmup=False
    )
    elapsed = time.perf_counter() - start
    ordered = [out[key].generated_tokens for key in sorted(out, key=lambda k: int(k[4:]))]
    return sum(map(len, ordered)) / elapsed, ordered


def inferd_engine(backend: TorchBackend, prompts: Tokens, new: int) -> tuple[float, Tokens]:
    batcher = backend.batcher(len(prompts))
    params = SamplingParams(temperature=0.0, max_tokens=new)
    start = time.perf_counter()
    for seq_id, prompt in enumerate(prompts):
        batcher.add(seq_id, prompt, params)
    out: Tokens = [[] for _ in prompts]
    while any(len(tokens) < new for tokens in out):
        for result in batcher.step():
            out[result.seq_id].append(result.token)
            if len(out[result.seq_id]) == new:
                batcher.finish(result.seq_id)
    return len(prompts) * new / (time.perf_counter() - start), out


def main() -> None:
    path, count, new = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    warnings.simplefilter("ignore")
    hf_logging.set_verbosity_error()
    torch.set_num_threads(1)
    prompts = [[(7 * i + j) % 500 + 3 for j in range(64)] for i in range(count)]
    options = EngineOptions(threads=1, max_batch_tokens=256, max_prefill_tokens=512)
    backend = TorchBackend(path, quantization="fp32", options=options)
    backend.load()
    theirs, ours = [], []
    for _ in range(2):
        rate, their_tokens = transformers_cb(path, prompts, new)
        theirs.append(rate)
        rate, our_tokens = inferd_engine(backend, prompts, new)
        ours.append(rate)
    print(
        f"{count} requests x {new} tokens, fp32, 1 thread: transformers CB {max(theirs):.1f} "
        f"tok/s, inferd {max(ours):.1f} tok/s, ratio {max(ours) / max(theirs):.2f}x"
    )
    print("same greedy tokens:", their_tokens == our_tokens)


if __name__ == "__main__":
    main()
