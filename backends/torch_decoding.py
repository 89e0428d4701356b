"""One torch generation: a KV cache plus a sampler, and batches of them.

TorchDecoding yields one token id per step() (the prefill on the first call).
DecodeBatch runs the decode steps of several decodings in one forward pass by packing
their caches into one left-padded batch; each row still samples with its own params.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import (
    DynamicCache,
    PreTrainedModel,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.cache_utils import DynamicLayer

from inferd.backends.base import OCCURRENCE_WINDOW, BackendError, SamplingParams


class TorchDecoding:
    """One generation: its KV cache, the ids the penalties need, and its sampler."""

    def __init__(
        self,
        model: PreTrainedModel,
        prompt_ids: Sequence[int],
        params: SamplingParams,
        cache_arg: str = "cache",
        forward_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """cache_arg names forward()'s cache argument; forward_kwargs are its other constants."""
        self._model = model
        self._prompt = list(prompt_ids)
        self._capacity = len(self._prompt) + max(params.max_tokens, 1)
        self._cache: DynamicCache | None = DynamicCache(config=model.config)
        self._kwargs = {**(forward_kwargs or {}), cache_arg: self._cache}
        self._input: torch.Tensor | None = None  # ids of the next forward
        self._history: torch.Tensor | None = None  # prompt + generated, for the penalties
        self._length = 0
        self._penalties, self._warpers = _make_processors(params)
        self._batch: DecodeBatch | None = None  # set while the cache lives in a batch
        self._generator: torch.Generator | None = None
        if self._warpers:
            self._generator = torch.Generator(device=model.device)
            if params.seed is None:
                self._generator.seed()
            else:
                self._generator.manual_seed(params.seed)

    @property
    def batchable(self) -> bool:
        """Past its prefill, with a plain per-layer cache that can be stacked with others."""
        return (
            self._cache is not None
            and self._input is not None
            and all(type(layer) is DynamicLayer for layer in self._cache.layers)
        )

    def step(self) -> int:
        if self._cache is None:
            raise BackendError("this generation is closed")
        if self._batch is not None:
            self._batch.dissolve()  # stepped alone: take this cache back out of the batch
        # inference_mode is thread-local, so it is entered here on the caller's thread.
        with torch.inference_mode():
            if self._input is None:
                self._prefill_inputs()
            # forward only the new ids; the cache holds the keys/values of all before them
            out = self._model(input_ids=self._input, **self._kwargs)
            # logits of the last position, in fp32 like generate() for identical argmax
            scores = out.logits[:, -1, :].float()
            del out
            return self._choose(scores)

    def _choose(self, scores: torch.Tensor) -> int:
        """The next token from this sequence's (1, vocab) logits, with its own sampler."""
        if self._penalties:
            # make tokens already in the prompt or the output less likely
            seen = self._history[:, : self._length]
            for penalty in self._penalties:
                scores = penalty(seen, scores)
        if not self._warpers:
            # temperature 0: greedy
            token = torch.argmax(scores, dim=-1)
        else:
            # scale by temperature, keep top-k, keep top-p, sample from the rest
            for warp in self._warpers:
                scores = warp(None, scores)
            probs = torch.softmax(scores, dim=-1)
            token = torch.multinomial(probs, 1, generator=self._generator).squeeze(1)
        # the sampled token is the only input of the next step
        self._input = token.view(1, 1)
        if self._history is not None:
            self._append(token)
        return int(token.item())

    def close(self) -> None:
        if self._batch is not None:
            self._batch.dissolve()  # free the batched cache now, not at the next step
        self._cache = None
        self._kwargs.clear()
        self._input = self._history = None

    def _prefill_inputs(self) -> None:
        """First step: the whole prompt goes in; the penalties' history starts as the prompt."""
        device = self._model.device
        self._input = torch.tensor([self._prompt], dtype=torch.long, device=device)
        if self._penalties:
            # Preallocated so each step writes one id instead of concatenating the history.
            self._history = torch.empty((1, self._capacity), dtype=torch.long, device=device)
            self._history[:, : len(self._prompt)] = self._input
            self._length = len(self._prompt)

    def _append(self, token: torch.Tensor) -> None:
        if self._length == self._history.shape[1]:  # the engine let it run past max_tokens
            self._history = torch.cat([self._history, torch.empty_like(self._history)], dim=1)
        self._history[:, self._length] = token
        self._length += 1


class DecodeBatch:
    """The caches of several decodings packed into one left-padded batched cache.

    Rows are aligned at the right: row i holds its sequence's keys/values in its last
    `lengths[i]` columns and padding before them, hidden by the attention mask. Each step
    appends one column to every row, so the padding stays on the left and the rows stay
    aligned. While packed, the members' own caches are stale; dissolve() writes the rows
    back into them (without the padding) and must run before any member steps alone.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        members: list[TorchDecoding],
        cache_arg: str,
        forward_kwargs: dict[str, Any],
    ) -> None:
        self.members = members
        self._model = model
        lengths = [m._cache.get_seq_length() for m in members]
        width = max(lengths)
        self._cache = DynamicCache(config=model.config)
        for index in range(len(self._cache.layers)):
            keys = [_left_pad(m._cache.layers[index].keys, width) for m in members]
            values = [_left_pad(m._cache.layers[index].values, width) for m in members]
            self._cache.update(torch.cat(keys), torch.cat(values), index)
        device = model.device
        # the position of the next token of each row is the number of real tokens before it
        self._positions = torch.tensor(lengths, dtype=torch.long, device=device).view(-1, 1)
        columns = torch.arange(width, device=device)
        self._mask = (columns >= width - self._positions).long()
        self._kwargs = {**forward_kwargs, cache_arg: self._cache}
        for member in members:
            member._batch = self

    def step(self) -> list[int]:
        """One forward pass for every row, then each member samples its own token."""
        with torch.inference_mode():
            input_ids = torch.cat([m._input for m in self.members])
            # the new column is real for every row
            self._mask = torch.nn.functional.pad(self._mask, (0, 1), value=1)
            out = self._model(
                input_ids=input_ids,
                attention_mask=self._mask,
                position_ids=self._positions,
                **self._kwargs,
            )
            scores = out.logits[:, -1, :].float()
            del out
            self._positions = self._positions + 1
            return [m._choose(scores[i : i + 1]) for i, m in enumerate(self.members)]

    def dissolve(self) -> None:
        """Give each open member its rows back as its own cache, and drop the batch."""
        if self._cache is None:  # already dissolved (a member closed or stepped alone)
            return
        lengths = self._positions.view(-1).tolist()
        for row, (member, length) in enumerate(zip(self.members, lengths, strict=True)):
            member._batch = None
            if member._cache is None:  # closed while packed: nothing to give back
                continue
            for index, layer in enumerate(self._cache.layers):
                keys = layer.keys[row : row + 1, :, -length:].clone()
                values = layer.values[row : row + 1, :, -length:].clone()
                member._cache.layers[index].keys = keys
                member._cache.layers[index].values = values
        self.members = []
        self._cache = None
        self._kwargs.clear()


def _left_pad(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """Zero columns before a (1, heads, length, dim) cache tensor, to `width` columns."""
    return torch.nn.functional.pad(tensor, (0, 0, width - tensor.shape[-2], 0))


class OccurrencePenalty:
    """OpenAI's presence and frequency penalties, applied as mlx-lm applies them.

    Over the last OCCURRENCE_WINDOW ids (prompt included), each id seen there loses
    `presence` once and `frequency` once per occurrence from its logit. Called like a
    transformers LogitsProcessor: (ids so far, (1, vocab) scores) -> new scores.
    """

    def __init__(self, presence: float, frequency: float) -> None:
        self.presence = presence
        self.frequency = frequency

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        ids, counts = torch.unique(input_ids[0, -OCCURRENCE_WINDOW:], return_counts=True)
        penalty = self.frequency * counts.to(scores.dtype) + self.presence
        return scores.index_add(1, ids, -penalty.unsqueeze(0))


def _make_processors(params: SamplingParams) -> tuple[list[Any], list[Any]]:
    """The penalties ([] when all are off) and the sampling warpers ([] for greedy)."""
    _check_params(params)
    penalties: list[Any] = []
    if params.repeat_penalty != 1.0:
        penalties.append(RepetitionPenaltyLogitsProcessor(params.repeat_penalty))
    if params.presence_penalty or params.frequency_penalty:
        penalties.append(OccurrencePenalty(params.presence_penalty, params.frequency_penalty))
    if params.temperature == 0:
        return penalties, []
    warpers: list[Any] = [TemperatureLogitsWarper(params.temperature)]
    if params.top_k > 0:
        warpers.append(TopKLogitsWarper(params.top_k))
    if params.top_p < 1.0:
        warpers.append(TopPLogitsWarper(params.top_p))
    return penalties, warpers


def _check_params(params: SamplingParams) -> None:
    problems = []
    if params.temperature < 0:
        problems.append(f"temperature must be >= 0, got {params.temperature}")
    if params.top_k < 0:
        problems.append(f"top_k must be >= 0 (0 disables it), got {params.top_k}")
    if not 0 < params.top_p <= 1:
        problems.append(f"top_p must be in (0, 1], got {params.top_p}")
    if params.repeat_penalty <= 0:
        problems.append(
            f"repeat_penalty must be > 0 (1.0 disables it), got {params.repeat_penalty}"
        )
    if problems:
        raise BackendError("invalid sampling parameters: " + "; ".join(problems))
