"""One sequence as the scheduler sees it: its tokens, how many are computed, its blocks.

`num_pending` tokens are still to run through the model: the rest of the prompt while
it is prefilled, then one (the last sampled) per step while it decodes. `tokens` holds
the prompt and everything generated, so a sequence preempted to free memory can be
computed again from them.
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
    sampler_state: Any = None  # the backend's per-sequence sampling state (e.g. an RNG)

    @classmethod
    def new(cls, seq_id: int, prompt_ids: Sequence[int], params: SamplingParams) -> SequenceState:
        return cls(seq_id, list(prompt_ids), params, num_prompt=len(prompt_ids))

    @property
    def num_pending(self) -> int:
        """Tokens still to run through the model before the next one can be sampled."""
        return len(self.tokens) - self.num_computed
