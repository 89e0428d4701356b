"""Decode-only steps through torch.compile: the small operators around the matmuls, fused.

A one-stream decode step of a 0.5B model on a CPU spends ~21 ms in its int8 matmuls
(reading the weights at the memory's pace) and ~15 ms in ~7,000 small operator calls
around them -- activation quantization, norms, rotary embeddings, attention -- and the
Python that issues them. torch.compile (inductor) turns a group of LAYERS_PER_GRAPH
decoder layers into one graph of fused C++ loops that calls the matmuls as they are:
1.29x the tokens per second at one stream, 1.31x at 8 and 1.21x at 32 (Qwen2.5-0.5B
shape, int8, 2 cores; `benchmarks/bench_engine.py` with and without
`--model-option compile=false`, consecutive runs).

Decode rows always take this path: prompt chunks run the eager LeanDecoder, and a step
that has both runs its decode rows here in a pass of their own (backends/torch_runner.py),
so a sequence decodes through the same loops whatever runs beside it. The graph is
compiled once per model, at load, for any number of rows (one included: the same loops
alone as in a batch, so greedy output stays the same) and any cache length -- and a
second one for rows whose attention runs in two groups by length
(torch_attention.decode_split).

Fused loops round differently from eager ones, so a probe at load compares the graph
with the eager forward, and any failure -- no C++ compiler, an operator inductor cannot
take -- leaves the eager path in place.
"""

from __future__ import annotations

import logging
import math
import time
import types
import weakref
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from torch._dynamo.decorators import mark_unbacked

from inferd.backends.torch_attention import StepLayout, attend_decode_groups
from inferd.backends.torch_attention_blocks import KEY_BLOCK, padded_length
from inferd.backends.torch_decoder import LeanDecoder, layer_inputs, layer_output
from inferd.backends.torch_kv_cache import KVCache, gather_slots, write_slots

log = logging.getLogger("inferd.torch")
Compiled = TypeVar("Compiled", bound=Callable[..., torch.Tensor])

# Layers to a graph, in even groups. Qwen2.5-0.5B's 24 in 2 graphs instead of 3: a
# one-row step 1.02x faster (~0.5 ms: a graph call and the wake-up of its first loop's
# threads; 2 cores, 4 interleaved pairs), its first load's compile 55 -> 69 s (cached on
# disk for the next). Fewer layers: more calls; more: compile time grows for little.
LAYERS_PER_GRAPH = 12
AUTO_MIN_PARAMETERS = 100_000_000  # "auto" compiles models this big (a tiny one loads in 1 s)
# The probe's bound on |compiled - eager| / |eager| over the logits. int8 activations
# round to whole steps, so a last-bit difference in a fused loop can move one by a step:
# 2-2.5% measured on a random 0.5B model (fp32: ~1e-6); a wrong graph is off by ~100%.
PROBE_TOLERANCE = 0.1
# Inductor options of the decode graph by device. On a CPU, a C++ wrapper instead of a
# Python one calls the graph's ~170 kernels and matmuls, and the graph's inputs are not
# re-checked against the shapes dynamo guards already (size_asserts): 1.02x at one
# stream, 1.01x at eight (Qwen2.5-0.5B shape, int8, 2 cores, interleaved A/B), for ~2 s
# more compiling. Prompt chunks measured no faster with it, so their graphs keep Python.
# A graph that does not compile or pass its probe with these is compiled without them.
DECODE_OPTIONS: dict[str, dict[str, object]] = {"cpu": {"cpp_wrapper": True, "size_asserts": False}}
_PROBE_SLOTS = 32  # the probe's cache slots, right after the padding block
_HALF_DTYPES = (torch.bfloat16, torch.float16)


def decode_layers(
    decoder: LeanDecoder,
    layers: Sequence[torch.nn.Module],
    hidden: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    slots: torch.Tensor,
    groups: Sequence[tuple[torch.Tensor, torch.Tensor]],
    keys: Sequence[torch.Tensor],
    values: Sequence[torch.Tensor],
) -> torch.Tensor:
    """Decoder layers over (1, rows, hidden) single-token rows, each writing its key and
    value at `slots` and attending to its positions in `groups` (StepLayout.decode_groups:
    one or two groups of consecutive rows, each (rows_i, blocks_i, KEY_BLOCK) slots and a
    (1, rows_i, 1, blocks_i, KEY_BLOCK) mask); `keys`/`values` are the layers' cache
    tensors. What LeanDecoder does for decode rows, in plain tensor operations for
    torch.compile."""
    rows = hidden.shape[1]
    groups = [(slots, mask.flatten(3)) for slots, mask in groups]  # slots in whole blocks
    if len(groups) == 2:  # the groups' rows make up the step's (unbacked sizes all)
        head = groups[0][0].shape[0]
        torch._check(head <= rows)
        torch._check(groups[1][0].shape[0] == rows - head)
    for layer, layer_keys, layer_values in zip(layers, keys, values, strict=True):
        query, key, value = layer_inputs(decoder, layer, hidden, cos, sin)
        write_slots(layer_keys, slots, key[0])
        write_slots(layer_values, slots, value[0])
        out = attend_decode_groups(
            query[0],
            groups,
            lambda group_slots, k=layer_keys, v=layer_values: (
                gather_slots(k, group_slots),  # (kv, rows_i, blocks_i, KEY_BLOCK, d)
                gather_slots(v, group_slots),
            ),
            layer.self_attn.scaling,
        )
        hidden = layer_output(layer, hidden, out.reshape(1, rows, -1))
    return hidden


class CompiledDecode:
    """LeanDecoder's forward for steps of decode rows only, its layers compiled."""

    def __init__(
        self,
        decoder: LeanDecoder,
        cache: KVCache,
        compiler: Callable | None = None,
        options: dict[str, object] | None = None,
    ) -> None:
        """`compiler`: torch.compile unless given (tests pass the identity), with
        inductor `options`."""
        self.decoder = decoder
        self.cache = cache
        count = len(decoder.layers)
        size = math.ceil(count / math.ceil(count / LAYERS_PER_GRAPH))  # even groups
        self._groups = [range(start, min(start + size, count)) for start in range(0, count, size)]
        self._layers = compiled_for(decoder.model, decode_layers, compiler, options)

    def __call__(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        keep: torch.Tensor,
        layout: StepLayout,
    ) -> torch.Tensor:
        """Logits (1, len(keep), vocab) of the kept rows of a step of decode rows only."""
        assert layout.num_decode == input_ids.shape[1] and not layout.prefills
        hidden, cos, sin = self.decoder.embed(input_ids, position_ids)
        # The rows as an unbacked size: unlike a dynamic one, never specialized to 1, so a
        # row alone runs the very loops it runs in a batch.
        for tensor, dim in ((hidden, 1), (cos, 1), (sin, 1), (layout.slots, 0)):
            mark_unbacked(tensor, dim, shape_id="rows")
        row_groups = layout.decode_groups()
        for index, (slots, mask) in enumerate(row_groups):
            if mask is None:  # always a mask: one graph, not one with and one without
                mask = torch.zeros(
                    (1, slots.shape[0], 1, slots.shape[1]),
                    dtype=self.cache.dtype,
                    device=slots.device,
                )
            # one group: all the rows; two (two graphs): each its own unbacked count
            rows = "rows" if len(row_groups) == 1 else f"group{index}"
            # the cache length as whole key blocks, which the blocks' sums need to know
            # (a dynamic length would be specialized to the probe's); unbacked, so that
            # one block runs the loops many do
            slots, mask = slots.unflatten(1, (-1, KEY_BLOCK)), mask.unflatten(3, (-1, KEY_BLOCK))
            mark_unbacked(slots, 0, shape_id=rows)
            mark_unbacked(mask, 1, shape_id=rows)
            mark_unbacked(slots, 1, shape_id=f"{rows}_blocks")
            mark_unbacked(mask, 3, shape_id=f"{rows}_blocks")
            row_groups[index] = (slots, mask)
        for group in self._groups:
            hidden = self._layers(
                self.decoder,
                [self.decoder.layers[i] for i in group],
                hidden,
                cos,
                sin,
                layout.slots,
                row_groups,
                [self.cache.keys[i] for i in group],
                [self.cache.values[i] for i in group],
            )
        return self.decoder.logits(hidden, keep)


# Each model's compiled functions, shared by its batchers (a graph compiles once), by
# function, compiler and options.
_COMPILED: weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple, Callable]] = (
    weakref.WeakKeyDictionary()
)


def compiled_for(
    model: torch.nn.Module,
    function: types.FunctionType,
    compiler: Callable | None = None,
    options: dict[str, object] | None = None,
) -> Callable[..., torch.Tensor]:
    """`function` compiled (by torch.compile unless `compiler` is given, with inductor
    `options`) for `model` alone."""
    compiler = compiler or torch.compile
    by_function = _COMPILED.setdefault(model, {})
    key = (function, compiler, tuple(sorted((options or {}).items())))
    if key not in by_function:
        # dynamo keeps its graphs (and its recompile limit) per code object: a copy of
        # the function per model keeps one model's graphs from serving or crowding another's
        code = function.__code__.replace()
        own = types.FunctionType(code, function.__globals__, function.__name__)
        # No guards on the modules' attributes: checking a graph's layers costs ~0.3 ms a call,
        # and a model's layers do not change after load (nor serve another's graphs).
        guards = {"guard_filter_fn": torch.compiler.skip_guard_on_all_nn_modules_unsafe}
        options = {**guards, **precision_options(model), **(options or {})}
        by_function[key] = compiler(own, fullgraph=True, options=options)
    return by_function[key]


def precision_options(model: torch.nn.Module) -> dict[str, object]:
    """Inductor options for a model's activation dtype. In bf16 or fp16, every operation's
    result is rounded to it as eagerly (emulate_precision_casts): a fused loop keeps
    float32 between operations otherwise, and the decode graph and the prompt graphs,
    fused differently, gave a token's keys other last bits -- 2 of 438 greedy requests
    changed batched (stories260K bf16, benchmarks/bench_batch_invariance.py --compile),
    0 with it."""
    half = getattr(model, "dtype", None) in _HALF_DTYPES  # a PreTrainedModel's activations
    return {"emulate_precision_casts": True} if half else {}


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """|got - expected| / |expected| over all the values (float32)."""
    got, expected = got.float(), expected.float()
    return ((got - expected).norm() / expected.norm()).item()


def compiled_decode(decoder: LeanDecoder, cache: KVCache) -> CompiledDecode | None:
    """A CompiledDecode, compiled now (tens of seconds for a 0.5B model), if its logits on
    probe steps match the eager forward's; None, with the reason logged, otherwise."""
    if cache.num_blocks * cache.block_size < cache.block_size + _PROBE_SLOTS:
        return None  # no room for the probe besides the padding block
    # one row, then three of other lengths: the graph and its reuse; then rows in two
    # groups (decode_split), the second graph
    probes = [
        lambda lengths=lengths, split=split: probe_inputs(decoder, cache, lengths, split)
        for lengths, split in (((5,), 0), ((3, 9, 6), 0), ((2, 3, 20), 2))
    ]
    options = DECODE_OPTIONS.get(cache.keys[0].device.type)
    if options:
        # a torch whose C++ wrapper cannot take this graph still compiles it plainly
        compiled = verified(
            "decode",
            lambda: CompiledDecode(decoder, cache, options=options),
            decoder,
            probes,
            otherwise=f"compiling it without {', '.join(sorted(options))}",
        )
        if compiled is not None:
            return compiled
    return verified("decode", lambda: CompiledDecode(decoder, cache), decoder, probes)


def verified(
    kind: str,
    build: Callable[[], Compiled],
    eager: Callable[..., torch.Tensor],
    probes: Sequence[Callable[[], tuple]],
    otherwise: str = "running it eagerly",
) -> Compiled | None:
    """`build()`, if it builds and its logits on every probe's inputs are `eager`'s
    within PROBE_TOLERANCE; None, with the reason and what happens `otherwise` logged,
    if not."""
    started = time.perf_counter()
    # a model's first compile takes a minute or more on a small CPU (cached on disk after)
    log.info("compiling the %s step", kind)
    try:
        compiled = build()
        with torch.inference_mode():
            for probe in probes:
                inputs = probe()
                error = relative_error(compiled(*inputs), eager(*inputs))
                if not error <= PROBE_TOLERANCE:
                    log.warning(
                        "the compiled %s step differs from eager by %.1f%%; %s",
                        kind,
                        100 * error,
                        otherwise,
                    )
                    return None
    except Exception as error:  # no C++ compiler, an operator inductor cannot take, ...
        log.warning("cannot compile the %s step (%s); %s", kind, error, otherwise)
        return None
    log.info("compiled the %s step in %.1f s", kind, time.perf_counter() - started)
    return compiled


def probe_inputs(
    decoder: LeanDecoder, cache: KVCache, lengths: Sequence[int], split: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, StepLayout]:
    """A step of decode rows of `lengths` cached positions each (the last one new) over
    random keys and values in the slots after the padding block: (input_ids,
    position_ids, keep, layout) for LeanDecoder or CompiledDecode; with `split`, the first
    `split` rows and the rest in two groups (StepLayout.decode_groups). The cache is empty
    at load, and every slot is written before it is read, so this leaves nothing behind."""
    size = cache.block_size
    device = cache.keys[0].device
    generator = torch.Generator().manual_seed(0)
    region = torch.arange(size, size + _PROBE_SLOTS, device=device)
    for tensor in (*cache.keys, *cache.values):
        noise = torch.randn((tensor.shape[0], len(region), tensor.shape[2]), generator=generator)
        write_slots(tensor, region, noise.to(device=device, dtype=tensor.dtype))
    if sum(lengths) > _PROBE_SLOTS:
        raise ValueError(f"probe rows of {sum(lengths)} positions; {_PROBE_SLOTS} at most")
    rows, longest = len(lengths), padded_length(max(lengths))
    decode_slots = torch.zeros((rows, longest), dtype=torch.long)
    mask = torch.full((1, rows, 1, longest), float("-inf"), dtype=cache.dtype)
    start = size
    for row, length in enumerate(lengths):  # one after the other, like sequences' blocks
        decode_slots[row, :length] = torch.arange(start, start + length)
        mask[0, row, 0, :length] = 0
        start += length
    last = torch.tensor(lengths) - 1
    layout = StepLayout(cache, decode_slots[torch.arange(rows), last].to(device))
    layout.num_decode = rows
    if split:
        head = padded_length(max(lengths[:split]))

        def fresh(tensor: torch.Tensor) -> torch.Tensor:  # strides of its own, as the runner's
            return tensor.clone(memory_format=torch.contiguous_format).to(device)

        layout.decode_slots = fresh(decode_slots[:split, :head])
        layout.decode_mask = fresh(mask[:, :split, :, :head])
        layout.decode_tail_slots = fresh(decode_slots[split:])
        layout.decode_tail_mask = fresh(mask[:, split:])
    else:
        layout.decode_slots = decode_slots.to(device)
        layout.decode_mask = mask.to(device)
    ids = torch.randint(decoder.embed_tokens.num_embeddings, (1, rows), generator=generator)
    return ids.to(device), last[None].to(device), torch.arange(rows, device=device), layout
