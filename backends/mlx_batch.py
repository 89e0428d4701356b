"""One MLX generation, and batches of them: the decode steps of several in one forward pass.

MlxDecoding owns a per-request KV cache (mlx-lm's make_prompt_cache) and yields one token
per step(), the prefill on the first. MlxDecodeBatch merges the caches of several
decodings into mlx-lm's batch caches (BatchKVCache and friends: left-padded rows plus the
attention mask and per-row RoPE offsets that go with them) and keeps them merged from
turn to turn: a request that leaves is filtered out, one that joins is merged in, so a
steady batch is never repacked. Each row still samples with its own sampler, logits
processors and seed.

Imported lazily by mlx_backend.py, so mlx may be imported at the top here. Everything
runs on the engine's model-owner thread (see mlx_backend.py).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.generate import generation_stream
from mlx_lm.models.cache import make_prompt_cache
from mlx_lm.sample_utils import LogitsProcessor, Sampler

from inferd.backends.base import BackendError

# Prompt tokens per prefill forward pass: mlx-lm's generate_step default.
_PREFILL_STEP = 2048


class MlxDecoding:
    """One generation: its KV cache, the ids the penalty looks back over, and its sampler."""

    def __init__(
        self,
        model: nn.Module,
        prompt_ids: Sequence[int],
        sampler: Sampler,
        processors: Sequence[LogitsProcessor],
        seed: int | None,
        history_window: int,
    ) -> None:
        self._model: nn.Module | None = model
        self._prompt: list[int] | None = list(prompt_ids)  # None once prefilled
        self._cache: list[Any] | None = make_prompt_cache(model)  # None while in a batch
        self._sampler = sampler
        self._processors = list(processors)
        self._window = history_window
        # prompt + generated ids, only kept when a processor (the repeat penalty) reads them
        self._history: list[int] = list(prompt_ids) if processors else []
        self._input = 0  # the id the next forward pass takes in; set by the prefill
        # A private RNG gives each sampled token its own mlx seed, so a seeded generation
        # reproduces whether it steps alone, interleaved with others or in a batch.
        self._rng = random.Random(seed) if seed is not None else None
        self._batch: MlxDecodeBatch | None = None

    @property
    def closed(self) -> bool:
        return self._model is None

    @property
    def batchable(self) -> bool:
        """Open, and every layer's cache has a batched form (mlx-lm's `merge`)."""
        if self._batch is not None:
            return not self.closed
        return self._cache is not None and all(hasattr(c, "merge") for c in self._cache)

    def step(self) -> int:
        if self._model is None:
            raise BackendError("step() called on a closed MLX generation")
        if self._batch is not None:
            self._batch.release([self])  # stepped alone: take this row's cache back
        self.prefill()
        with mx.stream(generation_stream):
            logits = self._model(mx.array([[self._input]]), cache=self._cache)
            return _choose([self], logits[:, -1, :])[0]

    def prefill(self) -> None:
        """Run all prompt ids but the last into the cache; the last is the first input.

        The last prompt id goes through the same one-token forward pass as every decode
        step, alone or as a row of a batch, so a new request can join a batch right away.
        """
        if self._prompt is None:
            return
        prompt, self._prompt = self._prompt, None
        *head, self._input = prompt
        with mx.stream(generation_stream):
            for start in range(0, len(head), _PREFILL_STEP):
                chunk = mx.array([head[start : start + _PREFILL_STEP]])
                self._model(chunk, cache=self._cache)
                mx.eval([c.state for c in self._cache])
        mx.clear_cache()

    def close(self) -> None:
        if self._batch is not None:
            self._batch.release([self])  # free its row now, not at the next step
        self._model = self._cache = None
        self._history = []

    def _logits(self, logits: mx.array) -> mx.array:
        """This row's (1, vocab) logits after its processors (the repeat penalty)."""
        if self._processors:
            context = mx.array(self._history[-self._window :])
            for processor in self._processors:
                logits = processor(context, logits)
        return logits

    def _sample(self, logprobs: mx.array) -> mx.array:
        """The next id (lazy, shape (1,)) from this row's (1, vocab) log-probabilities."""
        if self._rng is not None:
            # Keys are drawn when the graph is built, so seeding right before this row's
            # sampler gives it its own random stream even inside a batch.
            mx.random.seed(self._rng.getrandbits(63))
        return self._sampler(logprobs)

    def _accept(self, token: int) -> int:
        self._input = token
        if self._processors:
            self._history.append(token)
            if len(self._history) > 4 * self._window:  # the penalty reads the last window
                del self._history[: -self._window]
        return token


def _choose(rows: Sequence[MlxDecoding], logits: mx.array) -> list[int]:
    """The next id of each row from (rows, vocab) logits, with each row's own sampling.

    The one place tokens are chosen, alone or batched, so a greedy row picks exactly what
    it would alone: the same processors, normalisation and argmax on its logits row.
    """
    if any(row._processors for row in rows):
        logits = mx.concatenate([row._logits(logits[i : i + 1]) for i, row in enumerate(rows)])
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    sampler = rows[0]._sampler
    if all(row._sampler is sampler and row._rng is None for row in rows):
        tokens = sampler(logprobs)  # one call for the whole batch (e.g. all greedy)
    else:
        tokens = mx.concatenate([row._sample(logprobs[i : i + 1]) for i, row in enumerate(rows)])
    return [row._accept(token) for row, token in zip(rows, tokens.tolist(), strict=True)]


class MlxDecodeBatch:
    """The caches of several decodings merged into mlx-lm batch caches, one row each.

    While a decoding is a member its own cache is None: its keys and values live only in
    its row. release() gives rows back (extracted, without padding) and filters them out;
    it runs before a member steps alone, when it closes, and when it is not in a turn.
    """

    def __init__(self, model: nn.Module) -> None:
        self._model = model
        self.members: list[MlxDecoding] = []
        self._cache: list[Any] = []  # one batch cache per layer; [] while empty

    def step(self, decodings: Sequence[MlxDecoding]) -> list[int]:
        """One forward pass for all of `decodings` (batchable ones); their ids, in order."""
        self._sync(decodings)
        inputs = mx.array([[m._input] for m in self.members])
        with mx.stream(generation_stream):
            logits = self._model(inputs, cache=self._cache)
            ids = _choose(self.members, logits[:, -1, :])
        by_row = dict(zip(map(id, self.members), ids, strict=True))
        return [by_row[id(d)] for d in decodings]

    def release(self, leaving: Sequence[MlxDecoding]) -> None:
        """Take members out of the batch; open ones get their rows back as their caches."""
        rows = {id(m) for m in leaving}
        keep = []
        for index, member in enumerate(self.members):
            if id(member) not in rows:
                keep.append(index)
                continue
            member._batch = None
            if not member.closed:
                member._cache = [c.extract(index) for c in self._cache]
        if len(keep) == len(self.members):
            return
        self.members = [self.members[i] for i in keep]
        if not keep:
            self._cache = []
        else:
            for layer in self._cache:
                layer.filter(keep)

    def _sync(self, decodings: Sequence[MlxDecoding]) -> None:
        """Make the members exactly `decodings`: release the others, merge in new ones."""
        wanted = {id(d) for d in decodings}
        self.release([m for m in self.members if id(m) not in wanted])
        joining = [d for d in decodings if d._batch is not self]
        if not joining:
            return
        for decoding in joining:
            if decoding._batch is not None:  # another backend's batch: not expected
                decoding._batch.release([decoding])
            decoding.prefill()
        # mlx-lm's merge left-pads the caches into one batch cache per layer; extend
        # right-aligns it with the rows already here (the mask hides the padding).
        merged = [
            layer.merge([d._cache[i] for d in joining]) for i, layer in enumerate(joining[0]._cache)
        ]
        if self._cache:
            for mine, theirs in zip(self._cache, merged, strict=True):
                mine.extend(theirs)
        else:
            self._cache = merged
        for decoding in joining:
            decoding._cache = None
            decoding._batch = self
        self.members.extend(joining)
