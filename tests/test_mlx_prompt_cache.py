"""backends/mlx_prompt_cache.py: mlx-lm's LRU prompt cache, found by prefix, bounded in tokens.

The caches are real mlx-lm KVCache objects filled with known numbers (no model), so what
comes back can be checked position by position.
"""

from __future__ import annotations

from typing import Any

from tests.mlx_support import filled, require_mlx
from tests.owner import Owner

require_mlx()


def positions(cache: list[Any]) -> list[float]:
    keys, _ = cache[0].keys_and_values() if cache[0].offset else (None, None)
    return [] if keys is None else keys.reshape(-1).tolist()


def make(max_tokens: int):
    from inferd.backends.mlx_prompt_cache import PromptCache

    return PromptCache(max_tokens)


def test_a_prompt_that_extends_an_entry_takes_all_of_it(owner: Owner) -> None:
    def run() -> tuple[int, list[float], int]:
        cache = make(10_000)
        cache.store(list(range(10)), filled(10), room=10_000)
        found, reused = cache.fetch(list(range(14)))
        return reused, positions(found), cache.hit_tokens

    reused, values, hits = owner(run)
    assert reused == 10 and hits == 10
    assert values == [float(i) for i in range(10)]


def test_a_longer_entry_is_trimmed_to_the_common_prefix(owner: Owner) -> None:
    def run() -> tuple[int, list[float], int]:
        cache = make(10_000)
        cache.store([1, 2, 3, 4, 5, 6, 7, 8], filled(8), room=10_000)
        found, reused = cache.fetch([1, 2, 3, 4, 9, 9])
        again, _ = cache.fetch([1, 2, 3, 4, 5, 6, 7, 8, 9])
        return reused, positions(found), len(positions(again))

    reused, values, entry_left = owner(run)
    assert reused == 4 and values == [0.0, 1.0, 2.0, 3.0]
    assert entry_left == 8  # the stored entry itself was not trimmed


def test_a_prompt_found_whole_leaves_its_last_token_to_run(owner: Owner) -> None:
    def run() -> tuple[int, int]:
        cache = make(10_000)
        cache.store([5, 6, 7], filled(3), room=10_000)
        found, reused = cache.fetch([5, 6, 7])
        return reused, len(positions(found))

    assert owner(run) == (2, 2)


def test_nothing_in_common_finds_nothing(owner: Owner) -> None:
    def run() -> tuple[Any, int]:
        cache = make(10_000)
        cache.store([1, 2, 3], filled(3), room=10_000)
        return cache.fetch([4, 5, 6])

    assert owner(run) == (None, 0)


def test_the_stored_copy_does_not_see_later_appends(owner: Owner) -> None:
    def run() -> list[float]:
        import mlx.core as mx

        cache = make(10_000)
        live = filled(4)
        cache.store([1, 2, 3, 4], live, room=10_000)
        extra = mx.full((1, 1, 3, 1), 99.0)
        for layer in live:
            layer.update_and_fetch(extra, extra)
        found, _ = cache.fetch([1, 2, 3, 4, 5])
        return positions(found)

    assert owner(run) == [0.0, 1.0, 2.0, 3.0]


def test_entries_are_evicted_oldest_first_within_max_tokens(owner: Owner) -> None:
    def run() -> tuple[list[int], int, int]:
        cache = make(600)  # each entry holds a 256-position buffer (mlx-lm's step)
        held = []
        for first in (100, 200, 300):
            cache.store([first, 1, 2], filled(3), room=10_000)
            held.append(cache.tokens)
        _, oldest = cache.fetch([100, 1, 2, 3])
        _, newest = cache.fetch([300, 1, 2, 3])
        return held, oldest, newest

    held, oldest, newest = owner(run)
    assert held == [256, 512, 512]
    assert oldest == 0 and newest == 3


def test_room_left_by_live_sequences_bounds_it_too(owner: Owner) -> None:
    def run() -> tuple[int, int]:
        cache = make(10_000)
        cache.store([1, 2, 3], filled(3), room=10_000)
        cache.store([4, 5, 6], filled(3), room=300)
        before = cache.tokens
        cache.evict(room=0)
        return before, cache.tokens

    assert owner(run) == (256, 0)


def test_max_tokens_zero_turns_it_off(owner: Owner) -> None:
    def run() -> tuple[Any, int, int]:
        cache = make(0)
        cache.store([1, 2, 3], filled(3), room=10_000)
        found, reused = cache.fetch([1, 2, 3, 4])
        return found, reused, cache.tokens

    assert owner(run) == (None, 0, 0)
