"""Drive any Batcher (backends/base.py) the way the engine does: requests join at given
steps and leave after a number of tokens. For a backend's tests (greedy output batched
equals alone) and benchmarks that compare the two."""

from __future__ import annotations

from collections.abc import Sequence

from inferd.backends.base import Batcher, SamplingParams

MAX_STEPS = 10_000


def run_alone(batcher: Batcher, prompt: Sequence[int], params: SamplingParams, n: int) -> list[int]:
    """n tokens of one sequence that has the batcher to itself."""
    return run_together(batcher, [prompt], [params], joins=[0], lengths=[n])[0]


def run_together(
    batcher: Batcher,
    prompts: Sequence[Sequence[int]],
    params: Sequence[SamplingParams],
    joins: Sequence[int],
    lengths: Sequence[int],
    errors: dict[int, Exception] | None = None,
) -> list[list[int]]:
    """Sequence i joins at step joins[i] and leaves after lengths[i] tokens (or an error,
    recorded in `errors` by index); returns each one's tokens."""
    out: list[list[int]] = [[] for _ in prompts]
    done: set[int] = set()
    step = 0
    while len(done) < len(prompts):
        for i, join in enumerate(joins):
            if join == step:
                batcher.add(i, prompts[i], params[i])
        for result in batcher.step():
            i = result.seq_id
            if result.error is not None:
                if errors is None:
                    raise result.error
                errors[i] = result.error
            else:
                out[i].append(result.token)
            if result.error is not None or len(out[i]) == lengths[i]:
                batcher.finish(i)
                done.add(i)
        step += 1
        if step >= MAX_STEPS:  # a sequence that never ends would hang the caller
            raise RuntimeError(f"the batcher stopped making progress ({MAX_STEPS} steps)")
    return out
