"""The MLX backend's Batcher: continuous batching with chunked prefill and prefix reuse.

Each step is the same plan as the torch engine's (inferd/scheduler.py): every decoding
sequence runs its one new token, and what is left of the step's token budget goes to
prompts, oldest first, in chunks, so a long prompt is spread over several steps instead
of freezing the running streams. A sequence computes its prompt but the last token in
its own mlx-lm cache (starting from the prompt cache's longest matching prefix, see
mlx_prompt_cache.py), then joins the decode batch (mlx_decode_batch.py), whose forward
pass takes that last token and samples its first new one; the last chunks of prompts
that end in the same step run as one pass (mlx_prefill.py). All of a step's work is
built lazily and handed to MLX at once; its tokens are read back by the next step(),
after it has handed over its own work (mlx_in_flight.py): one host sync per step.

A prompt's cache is offered to the prompt cache as its chunks are computed (so a shared
system prompt is reused by later requests while the first is still running), and a
sequence's whole cache when it finishes (so a chat's next turn reuses the answer too).

Failures stay with their sequence: a prefill chunk or a batched decode whose forward
pass raises while it is built is rolled back, and the sequences that fail alone end
with the error; a row whose logits are not finite ends its own sequence. A failure while
evaluating leaves nothing to trust in that step, so its sequences all end.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.generate import generation_stream
from mlx_lm.models.cache import make_prompt_cache

from inferd.backends.base import BackendError, EngineOptions, SamplingParams, StepResult
from inferd.backends.mlx_decode_batch import DecodeBatch
from inferd.backends.mlx_in_flight import InFlight, MlxSequence, Read, next_inputs, step_results
from inferd.backends.mlx_prefill import prefill_alone, prefill_together
from inferd.backends.mlx_prompt_cache import PromptCache
from inferd.backends.mlx_sampler import BatchSampler, row_sampling
from inferd.prefill_pacer import PrefillPacer
from inferd.scheduler import prompt_budget

log = logging.getLogger("inferd.mlx")
# Prompt tokens a step gives prefills at least, however many rows decode (and the
# pacer's first chunk beside them). Small: on MLX's CPU backend 8 tokens of a long
# prompt can already cost more than a step of 8 decodes.
MIN_PREFILL_TOKENS = 8
# A step with a long prompt's chunk takes at most this many times the decodes alone,
# unless configured: on MLX's CPU backend a chunk costs several decode steps (its
# attention grows with the prompt), and unpaced a 360-token prompt raised 8 stories260K
# streams' inter-token p99 5.2x; paced at 2, 1.5-1.9x (at 3: 3.3x).
DEFAULT_PREFILL_SLOWDOWN = 2.0
# Decode steps between returns of MLX's freed buffers to the system (as mlx-lm does).
_CLEAR_EVERY = 256


@dataclass(slots=True)
class _Plan:
    """What one step does before its decode pass."""

    ending: list[MlxSequence] = field(default_factory=list)  # sequences whose prompts end in it
    computed: list[MlxSequence] = field(default_factory=list)  # sequences whose caches it extends
    arrays: list[Any] = field(default_factory=list)  # to evaluate with the step's tokens
    chunk_tokens: int = 0  # in chunks that leave part of their prompt for later


class MlxBatcher:
    def __init__(self, model: nn.Module, vocab_size: int, options: EngineOptions) -> None:
        self.model = model
        self.vocab_size = vocab_size
        self.max_tokens = options.kv_cache_tokens
        self.max_batch_tokens = options.max_batch_tokens
        self.max_prefill_tokens = max(options.max_prefill_tokens, options.max_batch_tokens)
        cached = options.prefix_cache_tokens
        self.prompt_cache = PromptCache(self.max_tokens if cached is None else cached)
        self.sampler = BatchSampler()
        self.batch = DecodeBatch()
        self._waiting: deque[MlxSequence] = deque()
        self._prefilling: list[MlxSequence] = []  # started, in admission order
        self._seqs: dict[int, MlxSequence] = {}
        self._in_flight: InFlight | None = None
        self._steps = 0
        slowdown = options.prefill_slowdown or DEFAULT_PREFILL_SLOWDOWN
        self.pacer = PrefillPacer(slowdown, start_tokens=MIN_PREFILL_TOKENS)
        self._last_read: float | None = None  # when the last step in flight was read

    # -- the Batcher protocol -------------------------------------------------------
    def add(self, seq_id: int, prompt_ids: Sequence[int], params: SamplingParams) -> None:
        if not prompt_ids:
            raise BackendError("cannot generate from an empty prompt")
        bad = [i for i in prompt_ids if not 0 <= i < self.vocab_size]
        if bad:
            raise BackendError(
                f"token id {bad[0]} is outside the model's vocabulary (0..{self.vocab_size - 1})"
            )
        if len(prompt_ids) + 1 > self.max_tokens:
            raise BackendError(
                f"the prompt needs {len(prompt_ids) + 1} tokens of KV cache but the cache "
                f"holds {self.max_tokens}; raise kv_cache_tokens or send a shorter prompt"
            )
        sampling = row_sampling(params, prompt_ids, self.vocab_size)
        seq = MlxSequence(seq_id, list(prompt_ids), sampling)
        self._waiting.append(seq)
        self._seqs[seq_id] = seq

    def finish(self, seq_id: int) -> None:
        seq = self._seqs.pop(seq_id, None)
        if seq is None:
            return
        if seq_id in self.batch:
            if not seq.failed and self.prompt_cache.max_tokens:
                with mx.stream(generation_stream):
                    row = self.batch.extract(seq_id)
                    # Copied out after the pass in flight, without waiting for it, so the
                    # entry does not keep the batch's arrays alive.
                    mx.async_eval([layer.state for layer in row])
                self._offer(seq, row)
            self.batch.remove([seq_id])
            if not len(self.batch):
                self._in_flight = None  # only finished rows wait in it
        elif seq in self._prefilling:
            self._prefilling.remove(seq)
            if not seq.failed and seq.cache is not None:
                self._offer(seq, seq.cache)
        elif seq in self._waiting:
            self._waiting.remove(seq)
        seq.cache = None  # (a row that failed left the batch already)

    def step(self) -> list[StepResult]:
        """Build this step and hand it to MLX, then read back the previous step's tokens.

        Reading one step late lets the host prepare a step while the device computes the
        one before (as mlx-lm's BatchGenerator does): a sequence's token comes back from
        the step() after the one that computed it.
        """
        errors: dict[int, Exception] = {}
        with mx.stream(generation_stream):
            plan = _Plan()
            self._prefill(plan, errors)
            read = None  # the step in flight's tokens, once read
            if plan.arrays and self._in_flight is not None:
                read = self._run_chunks_alone(plan, errors)
            self._join(plan, errors)
            launched = self._decode(errors)
            if launched is not None:
                launched.decode_only = not plan.computed
            try:
                if launched is not None:
                    mx.async_eval(launched.tokens, launched.finite, plan.arrays)
                else:
                    mx.eval(plan.arrays)
            except Exception as error:  # nothing built in this step can be trusted
                log.exception("an MLX step failed while evaluating")
                errors.update(self._fail([*plan.computed, *self._rows()], error))
                launched = None
            if read is None:
                read = self._read_in_flight(errors)
            self._in_flight = launched
        self._tidy(bool(plan.computed))
        # Built last: a sequence that failed after the early read still gets its error.
        return step_results(read, errors, self._seqs)

    def close(self) -> None:
        """Drop every cache (the prompt cache's too); the batcher is unusable after."""
        mx.synchronize(generation_stream)  # nothing may still run when the streams go
        self._in_flight = None
        self.prompt_cache.clear()
        self.batch.remove(list(self.batch.seq_ids))
        self._waiting.clear()
        self._prefilling.clear()
        self._seqs.clear()

    # -- one step -------------------------------------------------------------------
    def _prefill(self, plan: _Plan, errors: dict[int, Exception]) -> None:
        """Plan this step's prompt work within its token budget, oldest prompt first.

        A chunk that leaves part of its prompt for later runs now, on the sequence's own
        cache; the prompts that end in this step go to plan.ending, to run together. A
        long prompt paced beside decoding rows runs its last chunk apart too, and joins
        the batch in the next step: joining (its cache merged into the batch's, every row
        padded to its length) is the costliest step of its prefill already.
        """
        prompts = len(self._prefilling) + len(self._waiting)
        new_prompt = self._waiting[0].pending if self._waiting and not self._prefilling else None
        budget = prompt_budget(
            len(self.batch),
            prompts,
            self.max_batch_tokens,
            self.max_prefill_tokens,
            floor=MIN_PREFILL_TOKENS,
            new_prompt=new_prompt,
            paced=self.pacer.limit(),
        )
        paced = bool(len(self.batch)) and prompts == 1 and new_prompt is None
        for seq in list(self._prefilling):
            budget -= self._plan(seq, budget, plan, errors, last_apart=paced)
        # Later prompts start only when there is budget for them, so one that shares a
        # prefix with an earlier one finds the part computed so far in the prompt cache.
        while budget > 0 and self._waiting and self._fits(self._waiting[0]):
            seq = self._waiting.popleft()
            self._start(seq)
            budget -= self._plan(seq, budget, plan, errors)

    def _plan(
        self,
        seq: MlxSequence,
        budget: int,
        plan: _Plan,
        errors: dict[int, Exception],
        last_apart: bool = False,
    ) -> int:
        """Schedule up to `budget` of a prompt's pending tokens; returns how many.
        `last_apart`: its last chunk too runs on its own cache, and it joins next step."""
        if seq.failed or seq.cache is None:
            return 0
        count = max(0, min(seq.pending, budget))
        if count == seq.pending and not (last_apart and count):
            plan.ending.append(seq)
            return count
        if not count:
            return 0
        start = seq.num_computed
        try:
            prefill_alone(self.model, seq.cache, seq.tokens[start : start + count])
        except Exception as error:
            log.exception("a prefill chunk of sequence %d failed", seq.seq_id)
            errors.update(self._fail([seq], error))
            return 0
        seq.num_computed += count  # in the graph now; a failed evaluation fails it anyway
        plan.chunk_tokens += count
        plan.computed.append(seq)
        plan.arrays.append([layer.state for layer in seq.cache])
        self._offer(seq, seq.cache)  # a prompt started after this one may share it
        return count

    def _join(self, plan: _Plan, errors: dict[int, Exception]) -> None:
        """Run the last chunks of the prompts that end this step, together when there are
        several, and add those sequences to the decode batch."""
        ending = [seq for seq in plan.ending if seq.pending]
        ready = [seq for seq in plan.ending if not seq.pending]
        if len(ending) > 1:
            chunks = [seq.tokens[seq.num_computed : -1] for seq in ending]
            try:
                merged = prefill_together(self.model, [s.cache for s in ending], chunks)  # type: ignore[misc]
            except Exception as error:  # run them one by one: failures stay with their own
                log.warning("prefilling %d prompts together failed: %s", len(ending), error)
            else:
                self.batch.join_merged([seq.seq_id for seq in ending], merged)
                self._joined(ending, plan, offer=False)
                ending = []
        for seq in ending:
            try:
                prefill_alone(self.model, seq.cache, seq.tokens[seq.num_computed : -1])  # type: ignore[arg-type]
            except Exception as error:
                log.exception("the last prefill chunk of sequence %d failed", seq.seq_id)
                errors.update(self._fail([seq], error))
                continue
            ready.append(seq)
        self.batch.join([seq.seq_id for seq in ready], [seq.cache for seq in ready])  # type: ignore[misc]
        self._joined(ready, plan, offer=True)

    def _joined(self, seqs: list[MlxSequence], plan: _Plan, *, offer: bool) -> None:
        """Sequences now in the batch, their prompts computed; with `offer`, their own
        caches (which hold those prompts) go to the prompt cache. Rows prefilled together
        are offered when they finish instead: copying them out of the batch now would
        wait for the step in flight."""
        for seq in seqs:
            self._prefilling.remove(seq)
            seq.num_computed = len(seq.tokens) - 1
            if offer and seq.cache is not None and seq.num_computed:
                self._offer(seq, seq.cache)
            seq.cache = None
            plan.computed.append(seq)

    def _decode(self, errors: dict[int, Exception]) -> InFlight | None:
        """Build the batch's forward pass and sampling (lazy), one token per row.

        A row that continues takes the token still in flight from the last step as its
        input; a row that just joined, its prompt's last token. A pass that raises while
        it is built is undone; rows that fail on their own end with the error and
        leave, and the others are built again without them.
        """
        rows = self._rows()
        for attempt in range(2):
            if not rows:
                return None
            inputs, fed = next_inputs(self._in_flight, rows)
            sizes = self.batch.sizes()
            try:
                logits = self.batch.forward(self.model, inputs)
                tokens, finite = self.sampler.sample(logits, [s.sampling for s in rows], fed)
            except Exception as error:
                log.warning("a decode step of %d sequences failed: %s", len(rows), error)
                undone = self.batch.roll_back(sizes)
                isolate = undone and attempt == 0 and len(rows) > 1
                bad = [
                    s
                    for i, s in enumerate(rows)
                    if not (isolate and self._runs_alone(s, inputs[i]))
                ]
                errors.update(self._fail(bad, error))
                self.batch.remove([s.seq_id for s in bad])
                rows = [s for s in rows if s not in bad]
                continue
            for seq in rows:
                seq.num_computed += 1  # its input is in the graph now
            return InFlight(rows, tokens, finite)
        return None

    def _run_chunks_alone(self, plan: _Plan, errors: dict[int, Exception]) -> list[Read]:
        """For a step with prompt chunks beside decoding rows: read the step in flight,
        then evaluate the chunks on their own, timed for the pacer; returns what was read.

        Handed to MLX with the step's decode pass instead, a chunk runs after the tokens
        (nothing in the step waits for it), so its cost would show in the next step's
        time, and the pacer would learn it a step late and from the wrong step.
        """
        results = self._read_in_flight(errors)
        started = time.perf_counter()
        try:
            mx.eval(plan.arrays)
        except Exception as error:
            log.exception("an MLX prompt chunk failed while evaluating")
            errors.update(self._fail(plan.computed, error))
        else:
            self.pacer.record_chunk(plan.chunk_tokens, time.perf_counter() - started)
        plan.arrays = []
        return results

    def _read_in_flight(self, errors: dict[int, Exception]) -> list[Read]:
        """_read the step in flight, and tell the pacer what a decode pass takes: the time
        since the previous read, when this step was in flight since then and computed
        no prompt."""
        flight = self._in_flight
        results = self._read(flight, errors)
        now = time.perf_counter()
        if flight is not None and self._last_read is not None and flight.decode_only:
            self.pacer.record_decode(now - self._last_read)
        self._last_read = now if flight is not None else None
        return results

    def _read(self, flight: InFlight | None, errors: dict[int, Exception]) -> list[Read]:
        """The tokens of a step handed to MLX earlier (the one host sync), or its error."""
        if flight is None:
            return []
        try:
            return flight.read()
        except Exception as error:  # it failed on the device: so did all that used it
            log.exception("an MLX step failed while evaluating")
            errors.update(self._fail([*flight.rows, *self._rows()], error))
            return []

    def _rows(self) -> list[MlxSequence]:
        return [self._seqs[seq_id] for seq_id in self.batch.seq_ids]

    def _runs_alone(self, seq: MlxSequence, token: mx.array) -> bool:
        """Whether one row's forward pass builds on its own (on a copy of its cache)."""
        try:
            self.model(token.reshape(1, 1), cache=self.batch.extract(seq.seq_id))
        except Exception:
            log.exception("sequence %d fails on its own", seq.seq_id)
            return False
        return True

    @staticmethod
    def _fail(seqs: Sequence[MlxSequence], error: Exception) -> dict[int, Exception]:
        """Mark sequences failed (their caches are never reused); their errors by id."""
        for seq in seqs:
            seq.failed = True
        return {seq.seq_id: error for seq in seqs}

    # -- bookkeeping ------------------------------------------------------------------
    def _fits(self, seq: MlxSequence) -> bool:
        """Whether starting `seq` keeps the live sequences within kv_cache_tokens (the
        first one always starts: add() refused prompts the cache could never hold)."""
        live = [*self._prefilling, *(self._seqs[i] for i in self.batch.seq_ids)]
        used = sum(len(s.tokens) for s in live)
        return not live or used + len(seq.tokens) + 1 <= self.max_tokens

    def _start(self, seq: MlxSequence) -> None:
        """Give a sequence its cache: a copy of the longest cached prefix, else a new one."""
        cache, reused = self.prompt_cache.fetch(seq.tokens)
        seq.cache = cache if cache is not None else make_prompt_cache(self.model)
        seq.num_computed = reused
        self._prefilling.append(seq)

    def _offer(self, seq: MlxSequence, cache: list[Any]) -> None:
        """Let the prompt cache keep a copy of a sequence's computed tokens' cache, in
        what the live sequences leave of kv_cache_tokens."""
        live = sum(s.num_computed for s in self._seqs.values() if s.cache or s.seq_id in self.batch)
        self.prompt_cache.store(seq.tokens[: seq.num_computed], cache, room=self.max_tokens - live)

    def _tidy(self, prefilled: bool) -> None:
        self._steps += 1
        if prefilled or self._steps % _CLEAR_EVERY == 0:
            mx.clear_cache()
