"""The torch backend's Batcher: scheduler, KV cache, model runner and sampler together.

Each step: the scheduler (inferd/scheduler.py) picks decode tokens and prompt chunks
within the token budget, the runner (torch_runner.py) runs them as one forward pass
over the paged cache, the sampler (torch_sampler.py) picks every sampling row's token
at once, and the scheduler records what was computed.

A step the runner would take in two passes -- decode rows in the compiled decode graph,
prompt chunks in their own (torch_runner.py) -- is run as two: the prompt chunks first,
their first tokens out to their clients, then on the next call the decode rows
scheduled with them (without those that finished in between). The decoding streams get
their tokens when they would have, and a new request's first token comes a decode
pass sooner: 32 prompts of 64 tokens at once (Qwen2.5-0.5B shape, int8, 2 cores,
interleaved), the last first token after 1.85 s instead of 1.93, the mean 1.13 / 1.18.

A long prompt's chunk beside decoding streams goes further (the scheduler marks such a
step, ScheduledBatch.stages): its pass runs in parts of about as many layers each, a
decode pass between each two (torch_runner.run_staged), so the streams wait for part
of a chunk pass at a time, not all of it, and the pacer, which sizes chunks by what a
step may add to a decode pass (inferd/prefill_pacer.py), lets in longer chunks for the
same wait. The parts compute exactly what one pass would. While a chunk is in stages,
steps schedule decode rows only; a sequence finished or preempted between stages drops
its chunk, which is computed again from its tokens when it runs next.

Failures stay with their sequence. When a forward pass raises (a token id the model
does not have, say) and it carried several sequences, each is run again alone -- the
cache writes of a step are idempotent, so rerunning one is safe -- and only those that
fail alone are ended. A row whose logits are not finite ends its own sequence.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass

import torch

from inferd.backends.base import (
    NON_FINITE_SCORES,
    BackendError,
    SamplingParams,
    StepResult,
    check_params,
)
from inferd.backends.torch_decoder import next_stage
from inferd.backends.torch_runner import ModelRunner, StepOutput
from inferd.backends.torch_sampler import Sampler
from inferd.backends.torch_threads import use_threads
from inferd.scheduler import ScheduledBatch, Scheduler
from inferd.sequence import SequenceState

log = logging.getLogger("inferd.torch")
Item = tuple[SequenceState, int]
# Parts a long prompt's chunk pass runs in beside decoding streams (see above). A
# 2,000-token prompt beside 8 streams (Qwen2.5-0.5B, int8, 2 cores, in-process, paced at
# 2.5): its first token after 10.5 s in one pass, 6.8 s in 2 parts, 5.9 s in 3, 5.6 s in
# 4, the streams' inter-token p99 2.3-2.7x steady in each. More parts, more decode
# passes between a chunk's start and end, for less each time.
PREFILL_STAGES = 3


@dataclass(slots=True)
class _StagedChunk:
    """A prompt chunk computed in stages between decode passes."""

    batch: ScheduledBatch  # the chunk: one sequence's (seq, count)
    passes: Generator[None, None, StepOutput]
    seconds: float = 0.0  # its longest stage: what it adds to a decode pass


class TorchBatcher:
    def __init__(
        self,
        runner: ModelRunner,
        sampler: Sampler,
        scheduler: Scheduler,
        compute_lock: threading.Lock | None = None,
        threads: int | None = None,
    ) -> None:
        """compute_lock, when given, is held for every forward pass, which then runs on
        `threads` CPU threads (see torch_threads.py)."""
        self.runner = runner
        self.sampler = sampler
        self.scheduler = scheduler
        self._lock = compute_lock or contextlib.nullcontext()
        self._threads = threads
        self._seqs: dict[int, SequenceState] = {}
        self._decodes_left: ScheduledBatch | None = None  # the second pass of a step run in two
        self._staged: _StagedChunk | None = None

    def add(self, seq_id: int, prompt_ids: Sequence[int], params: SamplingParams) -> None:
        if not prompt_ids:
            raise BackendError("cannot generate from an empty prompt")
        check_params(params)
        seq = SequenceState.new(seq_id, prompt_ids, params)
        seq.sampler_state = self.sampler.new_generator(params)
        try:
            self.scheduler.add(seq)
        except ValueError as error:
            raise BackendError(str(error)) from None
        self._seqs[seq_id] = seq

    def finish(self, seq_id: int) -> None:
        seq = self._seqs.pop(seq_id, None)
        if seq is not None:
            self.scheduler.finish(seq)

    def step(self) -> list[StepResult]:
        if self._decodes_left is not None:
            batch, self._decodes_left = self._decodes_left, None
            batch.items = [(seq, n) for seq, n in batch.items if self._live(seq)]
            return self._run_batch(batch)
        if self._staged is not None:
            return self._advance_staged()
        batch = self.scheduler.schedule()
        if not self.runner.runs_apart(batch.items):
            return self._run_batch(batch)
        self._decodes_left = ScheduledBatch([(seq, n) for seq, n in batch.items if n == 1])
        batch.items = [(seq, n) for seq, n in batch.items if n > 1]
        if batch.stages < 2 or len(batch.items) != 1:
            return self._run_batch(batch, decodes_apart=True)
        self._staged = _StagedChunk(batch, self.runner.run_staged(batch.items, batch.stages))
        # what failed to be scheduled is answered now, not when the chunk is done
        failures = self._record(ScheduledBatch(failed=batch.failed), {}, {}, None)
        batch.failed = []
        return failures + self._advance_staged()

    def _live(self, seq: SequenceState) -> bool:
        """Whether `seq` is still this batcher's (not finished since it was scheduled)."""
        return self._seqs.get(seq.seq_id) is seq

    def _advance_staged(self) -> list[StepResult]:
        """The staged chunk's next stage, then a pass of decode rows; its sampled token
        (if it ends its prompt) and its record once the last stage has run."""
        staged = self._staged
        assert staged is not None
        seq = staged.batch.items[0][0]
        if not (self._live(seq) and seq in self.scheduler.running):
            # finished or preempted since the last stage: its slots are no longer its own
            staged.passes.close()
            self._staged = None
            return self.step()
        output: StepOutput | None = None
        failed: dict[int, Exception] = {}
        sampled: dict[int, tuple[int, bool]] = {}
        with torch.inference_mode(), self._lock:
            if self._threads is not None:
                use_threads(self._threads)
            started = time.perf_counter()
            try:
                output = next_stage(staged.passes)
                sampled = self._sample(output) if output is not None else {}
            except Exception as error:
                log.exception("a prompt chunk of sequence %d failed", seq.seq_id)
                failed[seq.seq_id] = error
            staged.seconds = max(staged.seconds, time.perf_counter() - started)
        results: list[StepResult] = []
        if output is not None or failed:
            self._staged = None
            timed = staged.seconds if not failed else None
            results = self._record(staged.batch, sampled, failed, timed, decodes_apart=True)
        if self._decodes_left is None:  # the decode rows scheduled with the chunk have run
            self._decodes_left = self.scheduler.schedule(prompts=False)
        return results

    def _run_batch(self, batch: ScheduledBatch, decodes_apart: bool = False) -> list[StepResult]:
        if not batch.items:
            return self._record(batch, {}, {}, None)
        with torch.inference_mode(), self._lock:
            if self._threads is not None:
                use_threads(self._threads)
            started = time.perf_counter()  # inside the lock: not another model's step
            sampled, failed = self._run_isolating(batch.items)
            seconds = time.perf_counter() - started
        return self._record(batch, sampled, failed, seconds if not failed else None, decodes_apart)

    def _record(
        self,
        batch: ScheduledBatch,
        sampled: dict[int, tuple[int, bool]],
        failed: dict[int, Exception],
        seconds: float | None,
        decodes_apart: bool = False,
    ) -> list[StepResult]:
        """Tell the scheduler what a pass computed (the failed sequences left out) and
        answer: batch.failed's, then each sampled token or error."""
        results = [StepResult(seq.seq_id, error=BackendError(why)) for seq, why in batch.failed]
        if not batch.items:
            return results
        if failed:
            batch.items = [(seq, n) for seq, n in batch.items if seq.seq_id not in failed]
        tokens = {i: token for i, (token, _) in sampled.items()}
        self.scheduler.postprocess(batch, tokens, seconds, decodes_apart=decodes_apart)
        for seq_id, (token, finite) in sampled.items():
            if finite:
                results.append(StepResult(seq_id, token=token))
            else:
                failed[seq_id] = BackendError(NON_FINITE_SCORES)
        results.extend(StepResult(seq_id, error=error) for seq_id, error in failed.items())
        return results

    def _run_isolating(
        self, items: list[Item]
    ) -> tuple[dict[int, tuple[int, bool]], dict[int, Exception]]:
        """Run a step; if it raises, run its sequences one by one to find the failing ones."""
        try:
            return self._run(items), {}
        except Exception as error:
            if len(items) == 1:
                log.exception("a step of sequence %d failed", items[0][0].seq_id)
                return {}, {items[0][0].seq_id: error}
            log.warning(
                "a step of %d sequences failed (%s); retrying one by one", len(items), error
            )
        sampled: dict[int, tuple[int, bool]] = {}
        failed: dict[int, Exception] = {}
        for item in items:
            more, errors = self._run_isolating([item])
            sampled.update(more)
            failed.update(errors)
        return sampled, failed

    def _run(self, items: list[Item]) -> dict[int, tuple[int, bool]]:
        """One forward pass and the sampling: {seq_id: (token, finite)} for sampling rows."""
        return self._sample(self.runner.run(items))

    def _sample(self, output: StepOutput) -> dict[int, tuple[int, bool]]:
        if not output.sampling:
            return {}
        picks = self.sampler.sample(output.logits, output.sampling)
        return {seq.seq_id: pick for seq, pick in zip(output.sampling, picks, strict=True)}
