"""inferd/kv_blocks.py: block allocation, reference counts, prefix hashes and eviction."""

from __future__ import annotations

import pytest

from inferd.kv_blocks import BlockManager, CacheFull


def registered(manager: BlockManager, tokens: list[int]) -> list[int]:
    """Allocate and register blocks for `tokens` as one sequence would; return them."""
    size = manager.block_size
    blocks = manager.allocate(manager.blocks_for(len(tokens)))
    parent = None
    for index, block in enumerate(blocks[: len(tokens) // size]):
        parent = manager.register(block, parent, tokens[index * size : (index + 1) * size])
    return blocks


def test_allocation_counts_and_runs_out():
    manager = BlockManager(num_blocks=4, block_size=2, max_cached_blocks=4, first_block=1)
    blocks = manager.allocate(3)
    assert blocks == [1, 2, 3]  # ids below first_block are never handed out
    assert manager.available == 1
    with pytest.raises(CacheFull):
        manager.allocate(2)
    manager.release(blocks)
    assert manager.available == 4


def test_a_prefix_is_found_after_its_sequence_released_it():
    manager = BlockManager(num_blocks=8, block_size=2, max_cached_blocks=8)
    blocks = registered(manager, [1, 2, 3, 4, 5])  # two full blocks and a partial one
    manager.release(blocks)
    assert manager.cached == 2  # the partial block had no hash: plain free
    # a longer prompt with the same start reuses both full blocks
    assert manager.match_prefix([1, 2, 3, 4, 9, 9]) == blocks[:2]
    # a different second block stops the match after the first
    assert manager.match_prefix([1, 2, 7, 4, 5, 6]) == blocks[:1]
    # the same tokens at another offset are another prefix
    assert manager.match_prefix([0, 1, 2, 3, 4]) == []


def test_a_match_always_leaves_a_token_to_compute():
    manager = BlockManager(num_blocks=8, block_size=2, max_cached_blocks=8)
    blocks = registered(manager, [1, 2, 3, 4])
    manager.release(blocks)
    assert manager.match_prefix([1, 2, 3, 4]) == blocks[:1]
    assert manager.match_prefix([1, 2, 3, 4, 5]) == blocks


def test_shared_blocks_are_counted_once_and_freed_by_the_last_holder():
    manager = BlockManager(num_blocks=4, block_size=2, max_cached_blocks=4)
    blocks = registered(manager, [1, 2, 3, 4])
    shared = manager.match_prefix([1, 2, 3, 4, 5])
    manager.acquire(shared)  # a second sequence takes the same two blocks
    assert manager.available == 2
    manager.release(blocks)
    assert manager.available == 2  # still held by the second one
    manager.release(shared)
    assert (manager.available, manager.cached) == (4, 2)


def test_allocation_evicts_the_least_recently_used_prefix_first():
    manager = BlockManager(num_blocks=4, block_size=2, max_cached_blocks=4)
    old = registered(manager, [1, 2])
    new = registered(manager, [3, 4])
    manager.release(old)
    manager.release(new)
    manager.allocate(3)  # two free blocks, then the oldest cached one
    assert manager.match_prefix([1, 2, 0]) == []
    assert manager.match_prefix([3, 4, 0]) == new


def test_the_prefix_cache_is_bounded():
    manager = BlockManager(num_blocks=8, block_size=2, max_cached_blocks=1)
    first = registered(manager, [1, 2])
    second = registered(manager, [3, 4])
    manager.release(first)
    manager.release(second)
    assert manager.cached == 1
    assert manager.match_prefix([1, 2, 0]) == []  # evicted to stay within the bound
    assert manager.match_prefix([3, 4, 0]) == second
    assert manager.available == 8


def test_no_prefix_cache_keeps_nothing():
    manager = BlockManager(num_blocks=4, block_size=2, max_cached_blocks=0)
    manager.release(registered(manager, [1, 2, 3, 4]))
    assert manager.cached == 0
    assert manager.match_prefix([1, 2, 3, 4, 5]) == []


def test_a_prefix_registered_twice_keeps_the_first_block():
    manager = BlockManager(num_blocks=4, block_size=2, max_cached_blocks=4)
    first = registered(manager, [1, 2])
    second = registered(manager, [1, 2])  # computed again by a concurrent sequence
    assert manager.match_prefix([1, 2, 3]) == first
    manager.release(second)
    assert manager.cached == 0  # the duplicate is plain free memory
