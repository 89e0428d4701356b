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
from collections.abc import Sequence

import torch

from inferd.backends.base import (
    NON_FINITE_SCORES,
    BackendError,
    SamplingParams,
    StepResult,
    check_params,
)
from inferd.backends.torch_runner import ModelRunner
from inferd.backends.torch_sampler import Sampler
from inferd.backends.torch_threads import use_threads
from inferd.scheduler import ScheduledBatch, Scheduler
from inferd.sequence import SequenceState

log = logging.getLogger("inferd.torch")
Item = tuple[SequenceState, int]


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
        self._decodes_left: list[Item] = []  # the second pass of a step run in two

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
        if self._decodes_left:
            items, self._decodes_left = self._decodes_left, []
            live = [(seq, n) for seq, n in items if self._seqs.get(seq.seq_id) is seq]
            return self._run_batch(ScheduledBatch(live))
        batch = self.scheduler.schedule()
        if not self.runner.runs_apart(batch.items):
            return self._run_batch(batch)
        self._decodes_left = [(seq, n) for seq, n in batch.items if n == 1]
        batch.items = [(seq, n) for seq, n in batch.items if n > 1]
        return self._run_batch(batch, decodes_apart=True)

    def _run_batch(self, batch: ScheduledBatch, decodes_apart: bool = False) -> list[StepResult]:
        results = [StepResult(seq.seq_id, error=BackendError(why)) for seq, why in batch.failed]
        if not batch.items:
            return results
        with torch.inference_mode(), self._lock:
            if self._threads is not None:
                use_threads(self._threads)
            started = time.perf_counter()  # inside the lock: not another model's step
            sampled, failed = self._run_isolating(batch.items)
            seconds = time.perf_counter() - started
        if failed:
            batch.items = [(seq, n) for seq, n in batch.items if seq.seq_id not in failed]
        tokens = {i: token for i, (token, _) in sampled.items()}
        timed = seconds if not failed else None
        self.scheduler.postprocess(batch, tokens, timed, decodes_apart=decodes_apart)
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
        output = self.runner.run(items)
        if not output.sampling:
            return {}
        picks = self.sampler.sample(output.logits, output.sampling)
        return {seq.seq_id: pick for seq, pick in zip(output.sampling, picks, strict=True)}
