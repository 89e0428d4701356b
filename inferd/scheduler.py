"""Which tokens of which sequences run in the next forward pass.

Every step, each decoding sequence runs its one new token, and what is left of a token
budget goes to prompts, oldest first, in chunks: a long prompt is spread over several
steps instead of stalling every stream for the whole of its prefill (vLLM's chunked
prefill with max_num_batched_tokens). On a CPU that is nearly free: a step reads the
weights once whatever the number of tokens in it, until the arithmetic catches up.
The budget grows with the number of prompts waiting (prompt_budget), so a burst of new
requests gets its first tokens sooner while one long prompt cannot stall the streams
(with a pacer, its chunks are as long as the measured step times allow:
inferd/prefill_pacer.py).

Memory is blocks (inferd/kv_blocks.py). A sequence takes its cached prefix and its
first blocks when it is first scheduled, and one more block whenever it fills one.
When a decoding sequence needs a block and none is left, the youngest running sequence
is preempted: its blocks go back and it is computed again from its tokens later
(recomputation, as in vLLM), so memory pressure slows requests down but never fails them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from inferd.kv_blocks import BlockManager
from inferd.prefill_pacer import PrefillPacer
from inferd.sequence import SequenceState


def prompt_budget(
    decoding: int,
    prompts: int,
    max_batch_tokens: int,
    max_prefill_tokens: int,
    floor: int,
    new_prompt: int | None = None,
    paced: int | None = None,
    stages: int = 1,
) -> int:
    """Prompt tokens a step may run besides its `decoding` single-token rows, with
    `prompts` prompts not yet computed (started or waiting). The MLX engine uses it too.

    Nothing decoding: max_prefill_tokens (nobody waits on the step). One prompt beside
    decoding streams: a new one of `new_prompt` <= max_batch_tokens tokens runs whole
    (cut to what the decodes leave, its request would wait a step more for its first
    token: measured, 8 streams' last first token 0.70 s instead of 0.47 s); a longer one
    goes in chunks of what the decodes leave of max_batch_tokens, and at most `paced`
    tokens (inferd/prefill_pacer.py: what keeps the step within its slowdown), so the
    streams keep their pace. Several: max_batch_tokens each, up to
    max_prefill_tokens, so a burst of new requests -- each waiting for its first token
    as the streams wait for their next -- is let in several prompts a step. Measured on
    the 0.5B model (int8, 2 cores): 32 streams' TTFT p95 went from 5.0 to 2.5 s; what a
    long prompt beside them costs the streams is the pacer's (docs/engine.md).
    A prompt always gets at least `floor` tokens, so it advances however many decode.
    A long prompt's chunk computed in `stages` parts (backends/torch_batcher.py) may be
    `stages` times as long: each part adds about that much less to a decode pass.
    """
    if not decoding:
        return max_prefill_tokens
    if not paces(decoding, prompts, max_batch_tokens, new_prompt):
        if prompts <= 1:  # a new prompt that runs whole
            return max(new_prompt or 0, floor)
        return max(min(max_batch_tokens * prompts, max_prefill_tokens), floor)
    budget = (max_batch_tokens - decoding) * stages
    if paced is not None:
        budget = min(budget, paced)
    return max(budget, floor)


def paces(decoding: int, prompts: int, max_batch_tokens: int, new_prompt: int | None) -> bool:
    """Whether a step's prompt work is one long prompt's chunk beside decoding rows (the
    chunk the pacer sizes: prompt_budget)."""
    short = new_prompt is not None and new_prompt <= max_batch_tokens
    return bool(decoding) and prompts == 1 and not short


@dataclass(slots=True)
class ScheduledBatch:
    """One step's work: (sequence, number of its pending tokens to run), decodes first."""

    items: list[tuple[SequenceState, int]] = field(default_factory=list)
    failed: list[tuple[SequenceState, str]] = field(default_factory=list)
    # >1: its prompt work is a long prompt's chunk beside decoding rows, sized to be
    # computed in this many parts (Scheduler's chunk_stages)
    stages: int = 1

    def __bool__(self) -> bool:
        return bool(self.items or self.failed)


class Scheduler:
    """Owns the waiting and running sequences and their blocks."""

    def __init__(
        self,
        blocks: BlockManager,
        max_batch_tokens: int,
        max_prefill_tokens: int,
        pacer: PrefillPacer | None = None,
        chunk_stages: int = 1,
    ) -> None:
        """max_batch_tokens bounds a step with decodes in it; max_prefill_tokens one without
        (nobody waits on a step that only prefills, so it may be larger). `pacer`, when
        given, learns from the steps' times (postprocess) how long a long prompt's chunks
        beside decodes may be. chunk_stages: the parts such a chunk is computed in, apart
        from the decode rows (1: in one pass)."""
        self.blocks = blocks
        self.pacer = pacer
        self.chunk_stages = max(chunk_stages, 1)
        self.max_batch_tokens = max_batch_tokens
        self.max_prefill_tokens = max(max_prefill_tokens, max_batch_tokens)
        self.waiting: deque[SequenceState] = deque()
        self.running: list[SequenceState] = []  # started: holds blocks, in admission order
        self.prefix_hit_tokens = 0  # prompt tokens taken from the cache instead of computed

    def add(self, seq: SequenceState) -> None:
        """Queue a sequence; fails at once when even the cache as a whole could not hold it."""
        need = self.blocks.blocks_for(len(seq.tokens) + 1)
        if need > self.blocks.num_blocks:
            capacity = self.blocks.num_blocks * self.blocks.block_size
            raise ValueError(
                f"the prompt needs {len(seq.tokens) + 1} tokens of KV cache but the cache holds "
                f"{capacity}; raise kv_cache_tokens or send a shorter prompt"
            )
        self.waiting.append(seq)

    def finish(self, seq: SequenceState) -> None:
        """Forget a sequence (finished, cancelled or failed) and give its blocks back."""
        if seq in self.running:
            self.running.remove(seq)
            self.blocks.release(seq.blocks)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        seq.blocks = []

    @property
    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    def schedule(self, prompts: bool = True) -> ScheduledBatch:
        """The next step's work; with `prompts` False its decode rows only (while a prompt
        chunk is computed apart, in stages: backends/torch_batcher.py)."""
        batch = ScheduledBatch()
        decodes = [seq for seq in self.running if seq.num_pending == 1]
        for seq in decodes:
            if seq not in self.running:  # preempted for an older one just now
                continue
            if self._grow(seq, 1, batch):
                batch.items.append((seq, 1))
        if not prompts:
            return batch
        prefilling = [s for s in self.running if s.num_pending > 1]
        prompts = len(prefilling) + len(self.waiting)
        new_prompt = len(self.waiting[0].tokens) if self.waiting and not prefilling else None
        if paces(len(batch.items), prompts, self.max_batch_tokens, new_prompt):
            batch.stages = self.chunk_stages
        budget = prompt_budget(
            len(batch.items),
            prompts,
            self.max_batch_tokens,
            self.max_prefill_tokens,
            floor=self.blocks.block_size,  # always at least one block's worth
            new_prompt=new_prompt,
            paced=self.pacer.limit() if self.pacer is not None else None,
            stages=batch.stages,
        )
        for seq in prefilling:
            budget -= self._schedule_prefill(seq, budget, batch)
            if budget <= 0:
                return batch
        while self.waiting and budget > 0:
            seq = self.waiting[0]
            self._start(seq)
            taken = self._schedule_prefill(seq, budget, batch)
            if not taken:  # no memory for it yet: it stays first in line
                self._unstart(seq)
                break
            self.waiting.popleft()
            self.running.append(seq)
            budget -= taken
        return batch

    def postprocess(
        self,
        batch: ScheduledBatch,
        sampled: dict[int, int],
        seconds: float | None = None,
        *,
        decodes_apart: bool = False,
    ) -> None:
        """Record what ran: computed counts, newly full blocks, and the sampled tokens
        (by seq_id; a sequence whose chunk ended short of its prompt samples nothing);
        `seconds`, what the step took, for the pacer. `decodes_apart`: the batch is a
        step's prompt chunks, run apart from the decode rows scheduled beside them (the
        pacer takes its time as what the chunks add to those rows' step)."""
        if self.pacer is not None and seconds is not None:
            decodes = sum(1 for _, count in batch.items if count == 1)
            prompt_tokens = sum(count for _, count in batch.items if count > 1)
            if decodes_apart:
                self.pacer.record_chunk(prompt_tokens, seconds)
            else:
                self.pacer.record(decodes, prompt_tokens, seconds)
        for seq, count in batch.items:
            seq.num_computed += count
            self._register_full_blocks(seq)
            token = sampled.get(seq.seq_id)
            if token is not None:
                seq.tokens.append(token)

    def _schedule_prefill(self, seq: SequenceState, budget: int, batch: ScheduledBatch) -> int:
        """Schedule up to `budget` of a sequence's pending tokens; returns how many."""
        count = min(seq.num_pending, budget)
        fits = (len(seq.blocks) + self.blocks.available) * self.blocks.block_size
        count = min(count, fits - seq.num_computed)
        if count <= 0:
            return 0
        self._grow(seq, count, batch)
        batch.items.append((seq, count))
        return count

    def _grow(self, seq: SequenceState, count: int, batch: ScheduledBatch) -> bool:
        """Give `seq` blocks for `count` more tokens, preempting younger sequences if needed."""
        need = self.blocks.blocks_for(seq.num_computed + count) - len(seq.blocks)
        while need > self.blocks.available:
            victim = next((s for s in reversed(self.running) if s is not seq), None)
            if victim is None:  # alone, and the whole cache cannot hold it any longer
                self.finish(seq)
                batch.failed.append((seq, "the KV cache is full; raise kv_cache_tokens"))
                return False
            batch.items = [(s, n) for s, n in batch.items if s is not victim]
            self._preempt(victim)
        if need > 0:
            seq.blocks.extend(self.blocks.allocate(need))
        return True

    def _preempt(self, seq: SequenceState) -> None:
        """Free a running sequence's blocks; it recomputes from its tokens when resumed."""
        self.running.remove(seq)
        self._unstart(seq)
        self.waiting.appendleft(seq)

    def _start(self, seq: SequenceState) -> None:
        """A sequence's first blocks: whatever prefix of it is cached already."""
        cached = self.blocks.match_prefix(seq.tokens)
        self.blocks.acquire(cached)
        seq.blocks = list(cached)
        seq.num_computed = len(cached) * self.blocks.block_size
        self.prefix_hit_tokens += seq.num_computed
        seq.block_hashes = self._hashes_of(seq, len(cached))

    def _unstart(self, seq: SequenceState) -> None:
        """Give a sequence's blocks back and forget its progress (it is not running)."""
        self.blocks.release(seq.blocks)
        seq.blocks, seq.block_hashes = [], []
        seq.num_computed = 0

    def _hashes_of(self, seq: SequenceState, count: int) -> list[int]:
        """The chained hashes of a sequence's first `count` blocks (as register() computes)."""
        hashes: list[int] = []
        parent: int | None = None
        size = self.blocks.block_size
        for index in range(count):
            parent = hash((parent, tuple(seq.tokens[index * size : (index + 1) * size])))
            hashes.append(parent)
        return hashes

    def _register_full_blocks(self, seq: SequenceState) -> None:
        size = self.blocks.block_size
        while len(seq.block_hashes) < seq.num_computed // size:
            index = len(seq.block_hashes)
            parent = seq.block_hashes[-1] if seq.block_hashes else None
            tokens = seq.tokens[index * size : (index + 1) * size]
            seq.block_hashes.append(self.blocks.register(seq.blocks[index], parent, tokens))
