"""The KV cache's bookkeeping: fixed-size blocks, who holds them, and cached prefixes.

The cache is a pool of `num_blocks` blocks of `block_size` token positions each (the
tensors live with the backend, e.g. backends/torch_kv_cache.py; this module only
counts). A sequence holds a list of blocks, its block table; joining or leaving moves
no data, it only takes or returns block ids.

Prefix reuse: once a block is full and computed, it is registered under a hash of its
tokens chained with the hash of the block before it, so a block stands for the whole
prefix up to its end. A new sequence whose prompt starts with registered blocks takes
them (a reference, not a copy) and skips computing them: the next turn of a chat, whose
prompt repeats the history, or a shared system prompt. Released blocks keep their
contents and their hash in a least-recently-used list, bounded by `max_cached_blocks`,
until a new allocation needs the space.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence


class CacheFull(Exception):
    """Not enough free blocks for an allocation."""


class BlockManager:
    """Allocates blocks, counts their references and remembers reusable prefixes."""

    def __init__(
        self, num_blocks: int, block_size: int, max_cached_blocks: int, first_block: int = 0
    ) -> None:
        """Block ids run from first_block (ids below it are the cache's own, never handed out)."""
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need blocks of positive size, got {num_blocks} x {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.max_cached_blocks = max(0, max_cached_blocks)
        end = first_block + num_blocks
        self._refs = [0] * end
        self._hash: list[int | None] = [None] * end  # of the prefix ending in the block
        self._tokens: list[tuple[int, ...] | None] = [None] * end
        self._free: deque[int] = deque(range(first_block, end))  # no content worth keeping
        self._cached: OrderedDict[int, None] = OrderedDict()  # unreferenced, hashed; LRU first
        self._by_hash: dict[int, int] = {}

    @property
    def available(self) -> int:
        """Blocks an allocation could get now (free ones plus evictable cached ones)."""
        return len(self._free) + len(self._cached)

    @property
    def cached(self) -> int:
        """Unreferenced blocks kept for prefix reuse."""
        return len(self._cached)

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def match_prefix(self, token_ids: Sequence[int]) -> list[int]:
        """Registered blocks holding the longest whole-block prefix of `token_ids`.

        At least one token is always left out, so the sequence has a token to run and its
        own writes never land in a shared block. The caller takes them with acquire().
        """
        blocks: list[int] = []
        parent: int | None = None
        size = self.block_size
        for start in range(0, len(token_ids) - 1 - size + 1, size):
            tokens = tuple(token_ids[start : start + size])
            key = hash((parent, tokens))
            block = self._by_hash.get(key)
            if block is None or self._tokens[block] != tokens:
                break
            blocks.append(block)
            parent = key
        return blocks

    def acquire(self, blocks: Sequence[int]) -> None:
        """Take a reference on blocks (from match_prefix) for one more sequence."""
        for block in blocks:
            if self._refs[block] == 0:
                self._cached.pop(block, None)
            self._refs[block] += 1

    def allocate(self, count: int) -> list[int]:
        """`count` fresh blocks, evicting the least recently used cached prefixes if needed."""
        if count > self.available:
            raise CacheFull(f"{count} blocks wanted, {self.available} available")
        blocks = []
        for _ in range(count):
            block = self._free.popleft() if self._free else self._evict_oldest()
            self._refs[block] = 1
            blocks.append(block)
        return blocks

    def release(self, blocks: Sequence[int]) -> None:
        """Drop one reference on each block; unreferenced hashed blocks stay reusable.

        Pass a sequence's table in order: the end of a sequence is evicted before its start,
        which other sequences are likelier to share.
        """
        for block in reversed(blocks):
            self._refs[block] -= 1
            if self._refs[block] > 0:
                continue
            if self._hash[block] is not None and self.max_cached_blocks > 0:
                self._cached[block] = None
                if len(self._cached) > self.max_cached_blocks:
                    self._free.append(self._evict_oldest())
            else:
                self._forget(block)
                self._free.append(block)

    def register(self, block: int, parent: int | None, tokens: Sequence[int]) -> int:
        """Make a full, computed block reusable; returns the hash that stands for its prefix.

        When the same prefix is registered already (two sequences computed it at once), the
        first block keeps the entry and this one is freed normally when released.
        """
        tokens = tuple(tokens)
        key = hash((parent, tokens))
        if key not in self._by_hash and self.max_cached_blocks > 0:
            self._by_hash[key] = block
            self._hash[block] = key
            self._tokens[block] = tokens
        return key

    def _evict_oldest(self) -> int:
        block, _ = self._cached.popitem(last=False)
        self._forget(block)
        return block

    def _forget(self, block: int) -> None:
        key = self._hash[block]
        if key is not None and self._by_hash.get(key) == block:
            del self._by_hash[key]
        self._hash[block] = None
        self._tokens[block] = None
