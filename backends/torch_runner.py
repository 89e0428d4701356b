"""One forward pass for a scheduled step: inputs, cache layout, and the logits to sample.

The scheduler hands over (sequence, token count) pairs. The runner packs all of their
tokens into one row -- single-token items (decodes) first, by length where their
attention runs in two groups (torch_attention.decode_split), then prompt chunks -- with
a position id per token, tells the attention function (backends/torch_attention.py) where
every token's keys and values go and what each attends to, and returns the logits of
the items whose last pending token ran (the ones that sample a token this step).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from inferd.backends.torch_attention import LAYOUT_KWARG, PrefillChunk, StepLayout, decode_split
from inferd.backends.torch_attention_blocks import padded_length
from inferd.backends.torch_compiled_decode import compiled_decode
from inferd.backends.torch_compiled_prefill import compiled_prefill
from inferd.backends.torch_decoder import lean_decoder
from inferd.backends.torch_kv_cache import NULL_BLOCK, NULL_SLOT, KVCache
from inferd.sequence import SequenceState


@dataclass(slots=True)
class StepOutput:
    logits: torch.Tensor  # (len(sampling), vocab) float32
    sampling: list[SequenceState]  # the sequences that sample this step, in logits order


@dataclass(slots=True)
class _StepInputs:
    """One pass's packed tokens, cache layout and the sequences that sample from it."""

    ids: list[int]
    positions: list[int]
    keep: list[int]  # rows whose logits are wanted: the last token of each that samples
    layout: StepLayout
    sampling: list[SequenceState]

    def tensors(
        self, to_device: Callable[[torch.Tensor], torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, StepLayout]:
        """(input_ids, position_ids, keep_index, layout) as a forward takes them."""
        return (
            to_device(torch.tensor([self.ids])),
            to_device(torch.tensor([self.positions])),
            # only the rows that sample go through the output projection (none: skipped)
            to_device(torch.tensor(self.keep, dtype=torch.long)),
            self.layout,
        )

    def output(self, logits: torch.Tensor) -> StepOutput:
        """The pass's result from its forward's (1, len(keep), vocab) logits, as float32
        like generate()'s, so a greedy pick matches it exactly."""
        return StepOutput(logits[0].float(), self.sampling)


class ModelRunner:
    def __init__(self, model: PreTrainedModel, cache: KVCache, compile_steps: bool = False) -> None:
        """compile_steps: compile the forward passes (at once: seconds to minutes) where
        the model has a LeanDecoder and the compiled graphs pass their probes."""
        self.model = model
        self.cache = cache
        self.device = model.device
        self._block_offsets = torch.arange(cache.block_size)
        # transformers' own modules without its wrappers, where that gives its logits
        self._lean = lean_decoder(model, cache)
        self._compiled = self._compiled_prefill = None
        if compile_steps and self._lean is not None:
            self._compiled = compiled_decode(self._lean, cache)
            if self._compiled is not None:
                self._compiled_prefill = compiled_prefill(self._lean, cache)

    @property
    def compiled(self) -> bool:
        """Whether decode rows run a compiled graph (prompt chunks too, unless their
        probe failed)."""
        return self._compiled is not None

    def runs_apart(self, items: Sequence[tuple[SequenceState, int]]) -> bool:
        """Whether run() takes these items' decode rows and prompt chunks in two passes."""
        kinds = {n == 1 for _, n in items}
        return self._compiled is not None and len(kinds) == 2

    def run(self, items: Sequence[tuple[SequenceState, int]]) -> StepOutput:
        decodes = [(seq, n) for seq, n in items if n == 1]
        prefills = [(seq, n) for seq, n in items if n > 1]
        if self.runs_apart(items):
            # Decode rows always take the compiled graph, whose rounding differs from the
            # eager pass: were they to run eagerly here, a sequence would decode
            # differently depending on whether others were prefilling beside it.
            first, second = self._run(decodes, []), self._run([], prefills)
            logits = torch.cat([first.logits, second.logits])
            return StepOutput(logits, first.sampling + second.sampling)
        return self._run(decodes, prefills)

    def run_staged(
        self, prefills: Sequence[tuple[SequenceState, int]], stages: int
    ) -> Generator[None, None, StepOutput]:
        """A pass of prompt chunks in `stages` parts of about as many layers each, which
        a caller may run between other passes (decode rows: see torch_batcher.py): a
        generator that pauses between the parts and returns what run() would have. Its
        results are run()'s, bit for bit; it holds the chunks' slots until it returns,
        and must not be resumed once their sequence has given its blocks back."""
        assert self._lean is not None and all(n > 1 for _, n in prefills)
        decoder = self._compiled_prefill or self._lean
        step = self._inputs([], prefills)
        logits = yield from decoder.staged(*step.tensors(self._to_device), stages)
        return step.output(logits)

    def _run(
        self,
        decodes: Sequence[tuple[SequenceState, int]],
        prefills: Sequence[tuple[SequenceState, int]],
    ) -> StepOutput:
        step = self._inputs(decodes, prefills)
        return step.output(self._forward(*step.tensors(self._to_device)))

    def _inputs(
        self,
        decodes: Sequence[tuple[SequenceState, int]],
        prefills: Sequence[tuple[SequenceState, int]],
    ) -> _StepInputs:
        split = decode_split(sorted(seq.num_computed + 1 for seq, _ in decodes))
        if split:  # rows by length, so each group's are consecutive
            decodes = sorted(decodes, key=lambda item: item[0].num_computed)
        ids: list[int] = []
        positions: list[int] = []
        for seq, count in (*decodes, *prefills):
            ids.extend(seq.tokens[seq.num_computed : seq.num_computed + count])
            positions.extend(range(seq.num_computed, seq.num_computed + count))
        layout = StepLayout(self.cache, self._to_device(self._slots([*decodes, *prefills])))
        if decodes:
            self._lay_out_decodes(layout, [seq for seq, _ in decodes], split)
        keep: list[int] = []
        sampling: list[SequenceState] = []
        for row, (seq, _) in enumerate(decodes):
            if seq.num_computed + 1 == len(seq.tokens):
                keep.append(row)
                sampling.append(seq)
        start = len(decodes)
        for seq, count in prefills:
            layout.prefills.append(self._prefill_chunk(seq, start, count))
            if seq.num_computed + count == len(seq.tokens):
                keep.append(start + count - 1)
                sampling.append(seq)
            start += count
        return _StepInputs(ids, positions, keep, layout, sampling)

    def _forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        keep_index: torch.Tensor,
        layout: StepLayout,
    ) -> torch.Tensor:
        """Logits (1, len(keep_index), vocab) of one step, by the fastest forward there is
        for it."""
        if self._compiled is not None and not layout.prefills:
            return self._compiled(input_ids, position_ids, keep_index, layout)
        if self._compiled_prefill is not None:
            return self._compiled_prefill(input_ids, position_ids, keep_index, layout)
        if self._lean is not None:
            return self._lean(input_ids, position_ids, keep_index, layout)
        return self.model(
            input_ids=input_ids,
            position_ids=position_ids,
            use_cache=False,
            logits_to_keep=keep_index,
            **{LAYOUT_KWARG: layout},
        ).logits

    def _slots(self, items: Sequence[tuple[SequenceState, int]]) -> torch.Tensor:
        """The cache slot of each token about to run, in packed-row order."""
        slots = [
            self._slots_of(seq, seq.num_computed, seq.num_computed + count) for seq, count in items
        ]
        return torch.cat(slots)

    def _slots_of(self, seq: SequenceState, start: int, end: int) -> torch.Tensor:
        """Slots of positions [start, end) of a sequence, from its block table."""
        size = self.cache.block_size
        first, last = start // size, (end - 1) // size + 1
        table = torch.tensor(seq.blocks[first:last])
        slots = (table[:, None] * size + self._block_offsets).view(-1)
        return slots[start - first * size : end - first * size]

    def _lay_out_decodes(self, layout: StepLayout, seqs: list[SequenceState], split: int) -> None:
        """The decode rows' padded gathers, each row attending to its own positions: one
        for all rows, or (split: decode_split's count) one for the first `split` rows and
        one for the rest."""
        layout.num_decode = len(seqs)
        if not split:
            layout.decode_slots, layout.decode_mask = self._padded_rows(seqs)
            return
        layout.decode_slots, layout.decode_mask = self._padded_rows(seqs[:split])
        layout.decode_tail_slots, layout.decode_tail_mask = self._padded_rows(seqs[split:])

    def _padded_rows(self, seqs: list[SequenceState]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(slots, mask) of one padded gather: (rows, padded) slots, `padded` the longest
        row's length up to a multiple of KEY_BLOCK, the padding in block 0, and a
        (1, rows, 1, padded) 0 / -inf mask where any row is padded."""
        lengths = [seq.num_computed + 1 for seq in seqs]
        padded = padded_length(max(lengths))
        size = self.cache.block_size
        width = -(-padded // size)
        table = torch.full((len(seqs), width), NULL_BLOCK, dtype=torch.long)
        for row, seq in enumerate(seqs):
            blocks = seq.blocks[:width]
            table[row, : len(blocks)] = torch.tensor(blocks)
        slots = (table[:, :, None] * size + self._block_offsets).view(len(seqs), -1)
        slots = slots[:, :padded]
        mask = None
        if min(lengths) != padded:
            valid = torch.arange(padded)[None, :] < torch.tensor(lengths)[:, None]
            slots = torch.where(valid, slots, NULL_SLOT)
            mask = torch.zeros(valid.shape, dtype=self.cache.dtype)
            mask = mask.masked_fill(~valid, float("-inf"))
            mask = self._to_device(mask[None, :, None, :])
        # fresh strides: a one-row slice counts as contiguous with its parent's row
        # stride, and a compiled graph guards on strides (one graph for any rows)
        return self._to_device(slots.clone(memory_format=torch.contiguous_format)), mask

    def _prefill_chunk(self, seq: SequenceState, start: int, count: int) -> PrefillChunk:
        offset = seq.num_computed
        kv_slots = self._to_device(self._slots_of(seq, 0, offset + count))
        return PrefillChunk(start, count, kv_slots)

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cpu":
            return tensor
        return tensor.to(self.device, non_blocking=True)
