"""What the batcher's tests share (tests/test_mlx_batcher*.py): stories260K loaded on the
module's owner thread, its prompts and their greedy tokens alone, and batchers over it.

A test module takes the fixtures by assignment (`stories = mlx_batcher_support.stories`):
imported by name, pytest would find them as well, but ruff would read each test's
parameter as redefining an unused import.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from inferd.backends.base import EngineOptions
from inferd.backends.mlx_backend import MlxBackend
from tests.batching import GREEDY, PROMPTS, TOKENS, run_alone
from tests.mlx_support import STORIES
from tests.owner import Owner

NO_REUSE = EngineOptions(prefix_cache_tokens=0)
STORY = (
    "Once upon a time, there was a little girl named Lily. She loved to play outside in "
    "the park with her friends. One day, she saw a big tree with a swing on it."
)


@pytest.fixture(scope="module")
def stories(owner: Owner) -> Iterator[MlxBackend]:
    backend = MlxBackend(str(STORIES))
    owner(backend.load)
    yield backend
    owner(backend.close)  # before the owner thread ends (see MlxBackend.close)


def batcher_of(backend: MlxBackend, options: EngineOptions):
    """A batcher over the loaded model with other options than the backend's."""
    from inferd.backends.mlx_batcher import MlxBatcher

    default = backend.batcher(4)
    return MlxBatcher(default.model, default.vocab_size, options)


@pytest.fixture(scope="module")
def prompts(owner: Owner, stories: MlxBackend) -> list[list[int]]:
    return [owner(stories.encode_text, prompt) for prompt in PROMPTS]


@pytest.fixture(scope="module")
def alone(owner: Owner, stories: MlxBackend, prompts: list[list[int]]) -> list[list[int]]:
    def run() -> list[list[int]]:
        return [run_alone(batcher_of(stories, NO_REUSE), p, GREEDY, TOKENS) for p in prompts]

    return owner(run)


def small_steps(prefix: int | None) -> EngineOptions:
    """16 tokens a step, so prompts of a few dozen tokens are prefilled in several chunks."""
    return EngineOptions(max_batch_tokens=16, max_prefill_tokens=16, prefix_cache_tokens=prefix)
