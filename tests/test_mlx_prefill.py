"""backends/mlx_prefill.py on stories260K: prompts prefilled together hold exactly what
each holds prefilled alone, and a chunk whose forward pass raises leaves its cache as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from inferd.backends.mlx_backend import MlxBackend
from tests.mlx_support import require_stories
from tests.owner import Owner

STORIES = require_stories()

pytestmark = pytest.mark.real_model
PROMPTS = ([1, 403, 407, 261, 378, 290, 300], [1, 274, 287], [1, 291, 276, 286, 261])


@pytest.fixture(scope="module")
def model(owner: Owner) -> Iterator[Any]:
    backend = MlxBackend(str(STORIES))
    owner(backend.load)
    yield owner(lambda: backend.batcher(1).model)
    owner(backend.close)


def test_prompts_prefilled_together_hold_what_each_holds_alone(owner: Owner, model) -> None:
    def run() -> list[float]:
        import mlx.core as mx
        from mlx_lm.models.cache import make_prompt_cache

        from inferd.backends.mlx_decode_batch import DecodeBatch
        from inferd.backends.mlx_prefill import prefill_alone, prefill_together

        alone = []
        for prompt in PROMPTS:
            cache = make_prompt_cache(model)
            prefill_alone(model, cache, prompt)
            alone.append(cache)
        # The first prompt's first three tokens are cached already (a prefix hit).
        started = make_prompt_cache(model)
        prefill_alone(model, started, PROMPTS[0][:3])
        caches = [started, make_prompt_cache(model), make_prompt_cache(model)]
        chunks = [PROMPTS[0][3:], PROMPTS[1], PROMPTS[2]]
        batch = DecodeBatch()
        batch.join_merged([0, 1, 2], prefill_together(model, caches, chunks))
        gaps = []
        for row, cache in enumerate(alone):
            together = batch.extract(row)
            for mine, theirs in zip(together, cache, strict=True):
                for a, b in zip(mine.keys_and_values(), theirs.keys_and_values(), strict=True):
                    assert a.shape == b.shape
                    gaps.append(mx.abs(a - b).max().item())
        return gaps

    assert max(owner(run)) < 1e-5


def test_a_chunk_that_raises_leaves_its_cache_as_it_was(owner: Owner, model) -> None:
    def run() -> tuple[list[int], list[int]]:
        from mlx_lm.models.cache import make_prompt_cache

        from inferd.backends.mlx_prefill import prefill_alone

        def broken(inputs, cache):
            model(inputs, cache=cache)  # appends, then fails
            raise ValueError("broken")

        cache = make_prompt_cache(model)
        prefill_alone(model, cache, PROMPTS[0])
        before = [layer.size() for layer in cache]
        with pytest.raises(ValueError, match="broken"):
            prefill_alone(broken, cache, PROMPTS[1])
        return before, [layer.size() for layer in cache]

    before, after = owner(run)
    assert after == before == [7] * len(before)
