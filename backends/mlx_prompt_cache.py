"""Prefix reuse for MLX: finished and prefilled sequences' KV caches, found by their tokens.

mlx-lm's LRUPromptCache (what `mlx_lm.server` uses) holds per-sequence caches in a trie
of their token ids. A new prompt takes a copy of the entry sharing its longest common
prefix: one that is a prefix of the prompt as it is (a chat's next turn, whose prompt
repeats the history), a longer one trimmed back to the common part (a shared system
prompt followed by another question). Entries are evicted least recently used first;
the bound is in tokens (converted to bytes with the model's KV size per token), so it
reads like the torch engine's `prefix_cache_tokens`.

Imported lazily (mlx may be missing); runs on the model-owner thread.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from mlx_lm.models.cache import LRUPromptCache, can_trim_prompt_cache, trim_prompt_cache

# The trie is keyed by model too; one PromptCache serves one model.
_MODEL = "model"
# Entries are bounded by bytes, not by count.
_MAX_ENTRIES = 1 << 30


class PromptCache:
    """Reusable KV caches by token prefix, at most `max_tokens` positions in all."""

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max(0, max_tokens)
        self._lru = LRUPromptCache(max_size=_MAX_ENTRIES)
        self._bytes_per_token: float | None = None  # learnt from the first entry
        self.hit_tokens = 0  # prompt tokens taken from here instead of computed

    @property
    def tokens(self) -> int:
        """Token positions held (estimated from bytes)."""
        if not self._bytes_per_token:
            return 0
        return round(self._lru.nbytes / self._bytes_per_token)

    def fetch(self, token_ids: Sequence[int]) -> tuple[list[Any] | None, int]:
        """A private copy of the cache of the longest cached prefix and its length.

        At least the last token is left out, so the sequence has a token to run (the
        one whose logits give its first new token). (None, 0) when nothing matches.
        """
        if self.max_tokens == 0 or len(token_ids) < 2:
            return None, 0
        cache, rest = self._lru.fetch_nearest_cache(_MODEL, list(token_ids))
        if cache is None:
            return None, 0
        if not rest:  # the whole prompt is cached: run its last token again
            if not can_trim_prompt_cache(cache):
                return None, 0
            trim_prompt_cache(cache, 1)
            rest = token_ids[-1:]
        reused = len(token_ids) - len(rest)
        self.hit_tokens += reused
        return cache, reused

    def store(self, token_ids: Sequence[int], cache: list[Any], *, room: int) -> None:
        """Keep `cache` (it holds the KV of exactly `token_ids`), then evict down to the
        bound, and to `room` tokens when the live sequences need the rest of the space.

        The cache's layer objects are copied (not their arrays: MLX arrays are values),
        so the owner may go on appending to its own.
        """
        if self.max_tokens == 0 or not token_ids:
            return
        layers = [copy.copy(layer) for layer in cache]
        if self._bytes_per_token is None:
            size = sum(layer.nbytes for layer in layers)
            self._bytes_per_token = max(1.0, size / max(1, _allocated(layers)))
        self._lru.insert_cache(_MODEL, list(token_ids), layers)
        self.evict(room)

    def clear(self) -> None:
        self._lru.trim_to(n_sequences=0)

    def evict(self, room: int) -> None:
        """Drop least recently used entries until at most min(room, max_tokens) remain."""
        if self._bytes_per_token is None:
            return
        limit = max(0, min(room, self.max_tokens))
        self._lru.trim_to(n_bytes=int(limit * self._bytes_per_token))


def _allocated(layers: Sequence[Any]) -> int:
    """Token positions the first layer's buffers hold (allocated in steps, not used)."""
    keys = getattr(layers[0], "keys", None)
    return int(keys.shape[2]) if keys is not None else layers[0].size()
