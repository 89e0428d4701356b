"""One sequence as the scheduler sees it: its tokens, how many are computed, its blocks.

A sequence is prefilling while `num_computed` is short of its tokens minus one, and
decoding after: then each step feeds its last token and appends the one sampled from it.
`tokens` holds the prompt and everything generated, so a sequence preempted to free
memory can be computed again from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from inferd.backends.base import SamplingParams


@dataclass(slots=True, eq=False)
class SequenceState:
    seq_id: int
    tokens: list[int]
    params: SamplingParams
    num_prompt: int
    num_computed: int = 0  # tokens whose keys/values are in the cache
    blocks: list[int] = field(default_factory=list)  # the block table
    block_hashes: list[int] = field(default_factory=list)  # of registered full blocks
    started: bool = False  # has been given blocks (a prefix match happens once, then)
    sampler_state: Any = None  # the backend's per-sequence sampling state (e.g. an RNG)

    @classmethod
    def new(cls, seq_id: int, prompt_ids: Sequence[int], params: SamplingParams) -> SequenceState:
        return cls(seq_id, list(prompt_ids), params, num_prompt=len(prompt_ids))

    @property
    def num_pending(self) -> int:
        """Tokens still to run through the model before the next one can be sampled."""
        return len(self.tokens) - self.num_computed

    @property
    def decoding(self) -> bool:
        """Past its prompt: each step runs exactly one token (the last sampled)."""
        return self.num_pending == 1 and len(self.tokens) > self.num_prompt

    @property
    def num_generated(self) -> int:
        return len(self.tokens) - self.num_prompt
