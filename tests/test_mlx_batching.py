"""Batched MLX decode steps: MlxBackend.step_many() on stories260K (mlx's CPU backend).

As in test_mlx_backend.py, all MLX work runs on one long-lived worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from inferd.backends.base import BackendError, SamplingParams
from inferd.backends.mlx_backend import MlxBackend, mlx_available
from inferd.engine import ModelWorker
from tests.batching import GREEDY, PROMPTS, TOKENS, alone, batched
from tests.owner import Owner

if not mlx_available():
    pytest.skip("mlx/mlx-lm not importable", allow_module_level=True)

STORIES = Path(__file__).parents[2] / "shared" / "models" / "stories260K"
if not (STORIES / "model.safetensors").is_file():
    pytest.skip(f"stories260K not found at {STORIES}", allow_module_level=True)

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def stories(owner: Owner) -> Iterator[MlxBackend]:
    backend = MlxBackend(str(STORIES))
    owner(backend.load)
    yield backend
    owner(backend.close)  # before the owner thread ends (see MlxBackend.close)


def test_greedy_batched_steps_equal_unbatched_ones(owner: Owner, stories: MlxBackend) -> None:
    lengths = (TOKENS, 9, TOKENS, 15)  # two close early, while the others go on
    expected = [owner(alone, stories, p, GREEDY, n) for p, n in zip(PROMPTS, lengths, strict=True)]
    got = owner(batched, stories, [GREEDY] * 4, (0, 0, 3, 7), lengths)
    assert got == expected


def test_each_row_keeps_its_own_sampling_params(owner: Owner, stories: MlxBackend) -> None:
    params = [
        GREEDY,
        SamplingParams(temperature=0.9, top_k=20, top_p=0.9, seed=7, max_tokens=64),
        SamplingParams(temperature=0.0, repeat_penalty=1.5, max_tokens=64),
        SamplingParams(temperature=1.2, top_k=0, top_p=1.0, seed=3, max_tokens=64),
    ]
    expected = [owner(alone, stories, p, q, TOKENS) for p, q in zip(PROMPTS, params, strict=True)]
    # Seeded rows draw the same tokens as alone: each row seeds its own sampler call.
    assert owner(batched, stories, params, (0, 1, 2, 0), [TOKENS] * 4) == expected
    assert expected[2] != owner(alone, stories, PROMPTS[2], GREEDY, TOKENS)


def test_a_batched_decoding_may_step_alone(owner: Owner, stories: MlxBackend) -> None:
    expected = [owner(alone, stories, p, GREEDY, 12) for p in PROMPTS[:3]]

    def run() -> list[list[int]]:
        decodings = [stories.start(stories.encode_text(p), GREEDY) for p in PROMPTS[:3]]
        got: list[list[int]] = [[], [], []]
        for step in range(12):
            if step % 4 == 2:  # stepped on its own while in the batch: its row comes back out
                got[1].append(decodings[1].step())
                for tokens, token in zip(got[::2], stories.step_many(decodings[::2]), strict=True):
                    tokens.append(token)
            else:
                for tokens, token in zip(got, stories.step_many(decodings), strict=True):
                    tokens.append(token)
        for decoding in decodings:
            decoding.close()
        return got

    assert owner(run) == expected


def test_a_decoding_closed_mid_batch_leaves_it(owner: Owner, stories: MlxBackend) -> None:
    expected = owner(alone, stories, PROMPTS[0], GREEDY, 10)

    def run() -> list[int]:
        first, second, third = (stories.start(stories.encode_text(p), GREEDY) for p in PROMPTS[:3])
        got = [stories.step_many([first, second, third])[0] for _ in range(4)]
        second.close()  # cancelled between turns, still a row of the batch
        with pytest.raises(BackendError, match="closed"):
            second.step()
        got += [stories.step_many([first, third])[0] for _ in range(6)]
        first.close()
        third.close()
        return got

    assert owner(run) == expected


async def test_the_engine_output_is_the_same_batched_or_not() -> None:
    async def texts(batch_steps: bool) -> list[str]:
        backend = MlxBackend(str(STORIES))
        worker = ModelWorker("mlx", lambda: backend, max_concurrent=4, batch_steps=batch_steps)
        try:
            await worker.ready()
            params = SamplingParams(temperature=0.0, max_tokens=20)
            streams = [worker.submit(backend.encode_text(p), params) for p in PROMPTS]

            async def text(stream) -> str:
                return "".join([event.text async for event in stream])

            return await asyncio.wait_for(asyncio.gather(*(text(s) for s in streams)), 60)
        finally:
            worker.stop()

    assert await texts(batch_steps=True) == await texts(batch_steps=False)
