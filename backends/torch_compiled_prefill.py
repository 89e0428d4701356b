"""Steps with prompt chunks through torch.compile: every layer's projections and MLP
compiled, the attention eager.

A prompt chunk's attention depends on how the step's chunks are laid out (a loop over
them, each with its own cached prefix and mask), which a graph cannot follow; the rest
of a layer works token by token. So each layer runs two compiled functions -- its
norm, q/k/v and rotary embeddings; its output projection, norm and MLP -- around
backends/torch_attention.py's paged attention. Measured (Qwen2.5-0.5B shape, int8, 2
cores): a step prefilling 8 prompts of 64 tokens 1.1-1.2x faster (530-570 -> 470 ms),
the int8 matmuls now most of it.

The functions are compiled once per model, at load, for any number of tokens from two
up (a step with a prompt chunk has two at least: a one-token item runs as a decode
row), which runs each token through the same loops whatever else the step holds. The
token count is a dynamic size, not an unbacked one as in the decode graph: with an
unbacked size inductor could not tell that the MLP's activation, its row maximum and
its quantization read the same rows, and made three passes over them instead of two
(an 8 x 64-token step 1.04x faster, 442 -> 425 ms, interleaved). A probe at load
compares the result with the eager forward, as for the compiled decode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from inferd.backends.torch_attention import PrefillChunk, StepLayout
from inferd.backends.torch_compiled_decode import compiled_for, probe_inputs, verified
from inferd.backends.torch_decoder import LeanDecoder, layer_inputs, layer_output
from inferd.backends.torch_kv_cache import KVCache


def with_compiled_halves(decoder: LeanDecoder, compiler: Callable | None = None) -> LeanDecoder:
    """LeanDecoder's forward with each layer's token-wise halves compiled. `compiler`:
    torch.compile unless given (tests pass the identity)."""
    inputs = compiled_for(decoder.model, layer_inputs, compiler)
    output = compiled_for(decoder.model, layer_output, compiler)
    return decoder.with_layer_halves(dynamic_tokens(inputs), two_rows_at_least(output))


def two_rows_at_least(output: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """The compiled output half (dynamic_tokens) for one row too: the last layer's runs on
    the rows that sample only (torch_decoder.py), one when a step ends one prompt, which
    goes through the graph for two tokens taken twice -- the same loops, with no graph
    compiled for one row at run time."""
    dynamic = dynamic_tokens(output)

    def call(layer: torch.nn.Module, hidden: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        if hidden.shape[1] > 1:
            return dynamic(layer, hidden, attended)
        return dynamic(layer, hidden.repeat(1, 2, 1), attended.repeat(1, 2, 1))[:, :1]

    return call


def dynamic_tokens(function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` with the token dimension (1) of its tensor arguments, all (1, tokens,
    ...), marked dynamic: one graph for any number of tokens from 2 (a guard, never hit,
    keeps 1 apart)."""

    def call(*args: Any) -> Any:
        for arg in args:
            if isinstance(arg, torch.Tensor):
                torch._dynamo.mark_dynamic(arg, 1)
        return function(*args)

    return call


def compiled_prefill(decoder: LeanDecoder, cache: KVCache) -> LeanDecoder | None:
    """The decoder with compiled halves (with_compiled_halves), compiled now, if its logits
    on probe steps match the eager forward's; None, with the reason logged, otherwise."""
    # two sizes: the graphs and their reuse
    probes = [
        lambda tokens=tokens: prefill_probe_inputs(decoder, cache, tokens) for tokens in (7, 12)
    ]
    return verified("prefill", lambda: with_compiled_halves(decoder), decoder, probes)


def prefill_probe_inputs(
    decoder: LeanDecoder, cache: KVCache, tokens: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, StepLayout]:
    """One prompt chunk of `tokens` after as many cached positions, in the probe slots of
    backends/torch_compiled_decode.py (random keys and values, nothing left behind)."""
    ids, _, _, decode_layout = probe_inputs(decoder, cache, (2 * tokens,))
    slots = decode_layout.decode_slots[0, : 2 * tokens]  # without its padding
    device = slots.device
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(decoder.embed_tokens.num_embeddings, (1, tokens), generator=generator)
    layout = StepLayout(cache, slots[tokens:])
    layout.prefills.append(PrefillChunk(0, tokens, slots))  # after the cached half
    positions = torch.arange(tokens, 2 * tokens, device=device)[None]
    keep = torch.tensor([0, tokens - 1], device=device)
    return ids.to(device), positions, keep, layout
