"""backends/torch_batcher.py: failures stay with their request, beside running streams.

A prompt the model cannot read (a token id past its vocabulary) fails its own prefill;
a row whose scores are not finite fails its own request; a temperature of 1e-40 is
greedy. In each case the other streams of the same steps carry on to the tokens they
would have produced alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from inferd.backends.base import BackendError, SamplingParams
from inferd.backends.torch_backend import EngineOptions, TorchBackend
from inferd.backends.torch_batcher import TorchBatcher
from inferd.backends.torch_runner import StepOutput
from tests.batching import GREEDY, PROMPTS, TOKENS, run_alone, run_together

pytestmark = [pytest.mark.real_model, pytest.mark.usefixtures("single_torch_thread")]


@pytest.fixture(scope="module")
def stories(stories_path: Path) -> TorchBackend:
    options = EngineOptions(threads=1, kv_cache_tokens=2048, block_size=4, max_batch_tokens=16)
    backend = TorchBackend(str(stories_path), quantization="fp32", options=options)
    backend.load()
    return backend


@pytest.fixture(scope="module")
def prompts(stories: TorchBackend) -> list[list[int]]:
    return [stories.encode_text(prompt) for prompt in PROMPTS]


@pytest.fixture(scope="module")
def alone(stories: TorchBackend, prompts: list[list[int]]) -> list[list[int]]:
    return [run_alone(stories.batcher(4), prompt, GREEDY, TOKENS) for prompt in prompts]


def test_a_failing_prefill_ends_only_its_own_request(stories, prompts, alone):
    broken = [*prompts[2], 10**6]  # no such token: the embedding lookup raises
    errors: dict[int, Exception] = {}
    got = run_together(
        stories.batcher(4),
        [prompts[0], prompts[1], broken],
        [GREEDY] * 3,
        joins=(0, 0, 2),  # it arrives while the other two decode
        lengths=[TOKENS] * 3,
        errors=errors,
    )
    assert list(errors) == [2]
    assert got[:2] == alone[:2]


def test_a_tiny_temperature_is_greedy_beside_other_streams(stories, prompts, alone):
    tiny = SamplingParams(temperature=1e-40)
    sampled = SamplingParams(temperature=0.8, seed=3)
    errors: dict[int, Exception] = {}
    got = run_together(
        stories.batcher(4),
        prompts[:3],
        [GREEDY, tiny, sampled],
        joins=(0, 1, 0),
        lengths=[TOKENS] * 3,
        errors=errors,
    )
    assert errors == {}
    assert got[:2] == alone[:2]


def test_a_row_with_non_finite_scores_ends_only_its_request(stories, prompts, alone):
    batcher = stories.batcher(4)
    runner_run = batcher.runner.run

    def poison_sequence_1(items):
        output = runner_run(items)
        rows = [i for i, seq in enumerate(output.sampling) if seq.seq_id == 1]
        logits = output.logits.clone()
        logits[rows] = float("nan")
        return StepOutput(logits, output.sampling)

    batcher.runner.run = poison_sequence_1
    errors: dict[int, Exception] = {}
    got = run_together(batcher, prompts[:3], [GREEDY] * 3, (0, 0, 0), [TOKENS] * 3, errors)
    assert list(errors) == [1]
    assert "non-finite" in str(errors[1])
    assert got[0] == alone[0] and got[2] == alone[2]


def test_finished_sequences_give_their_blocks_back(stories, prompts):
    batcher = stories.batcher(4)
    blocks = batcher.scheduler.blocks
    run_together(batcher, prompts, [GREEDY] * 4, (0, 1, 2, 3), [TOKENS, 3, 8, 1])
    assert blocks.available == blocks.num_blocks


def test_a_prompt_longer_than_the_whole_cache_is_refused(stories):
    with pytest.raises(BackendError, match="kv_cache_tokens"):
        stories.batcher(4).add(0, [1] * 3000, GREEDY)


class RecordingPacer:
    """A pacer that allows 5 tokens a chunk and keeps what the steps tell it."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, int, float]] = []

    def record(self, decode_rows: int, prompt_tokens: int, seconds: float) -> None:
        self.steps.append((decode_rows, prompt_tokens, seconds))

    def record_chunk(self, prompt_tokens: int, seconds: float) -> None:
        self.steps.append((-1, prompt_tokens, seconds))  # -1: timed apart from the decodes

    def limit(self) -> int:
        return 5


def test_each_step_is_timed_for_the_pacer_which_sizes_a_long_prompts_chunks(stories, prompts):
    batcher = stories.batcher(4)
    batcher.scheduler.pacer = pacer = RecordingPacer()
    for seq_id in (0, 1):
        batcher.add(seq_id, prompts[seq_id], GREEDY)
    for _ in range(4):
        batcher.step()
    before = len(pacer.steps)
    batcher.add(2, prompts[2] * 3, GREEDY)  # longer than the 16 tokens of a step
    while 2 not in {result.seq_id for result in batcher.step()}:
        pass
    assert all(seconds > 0 for _, _, seconds in pacer.steps)
    assert (2, 0) in {(rows, tokens) for rows, tokens, _ in pacer.steps[:before]}
    chunks = [tokens for rows, tokens, _ in pacer.steps[before:] if rows == 2]
    # 16 a step less the 2 decodes would be 14; the pacer's 5, but never below a block (4)
    assert len(chunks) > 2 and set(chunks[:-1]) == {5} and chunks[-1] <= 5


class TwoPassRunner:
    """The batcher's runner, but with a step of decode rows and prompt chunks taken in
    two passes (as the compiled runner does); records each pass's sequences."""

    def __init__(self, runner) -> None:
        self.runner = runner
        self.passes: list[set[int]] = []

    def runs_apart(self, items) -> bool:
        return len({count == 1 for _, count in items}) == 2

    def run(self, items) -> StepOutput:
        self.passes.append({seq.seq_id for seq, _ in items})
        return self.runner.run(items)


def test_a_step_run_in_two_passes_answers_its_prompt_chunks_first(stories, prompts, alone):
    batcher = stories.batcher(4)
    batcher.runner = runner = TwoPassRunner(batcher.runner)
    tokens: dict[int, list[int]] = {0: [], 1: [], 2: []}

    def step() -> list[int]:
        results = batcher.step()
        for result in results:
            tokens[result.seq_id].append(result.token)
        return [result.seq_id for result in results]

    batcher.scheduler.pacer = pacer = RecordingPacer()
    batcher.add(0, prompts[0], GREEDY)
    batcher.add(1, prompts[1], GREEDY)
    assert step() == [0, 1]  # prompts alone: one pass
    batcher.add(2, prompts[2], GREEDY)
    assert step() == [2]  # the new prompt's pass, its first token out first
    assert runner.passes[-1] == {2}
    batcher.finish(1)  # its client went away between the two passes
    assert step() == [0]  # the decode rows scheduled with it, less the finished one
    assert runner.passes[-1] == {0}
    # the pacer hears the prompt's pass as what it added to the decode rows' step
    both, third = len(prompts[0]) + len(prompts[1]), len(prompts[2])
    assert [(rows, tokens) for rows, tokens, _ in pacer.steps] == [(0, both), (-1, third), (1, 0)]
    while len(tokens[0]) < TOKENS or len(tokens[2]) < TOKENS:
        step()
    assert tokens[0][:TOKENS] == alone[0]
    assert tokens[2][:TOKENS] == alone[2]


class StagedRunner(TwoPassRunner):
    """A TwoPassRunner whose lone prompt chunks run in stages, as the compiled runner's
    do; logs each pass ("pass") and stage ("stage"), and counts chunks dropped."""

    def __init__(self, runner) -> None:
        super().__init__(runner)
        self.log: list[str] = []
        self.dropped = 0

    def run(self, items) -> StepOutput:
        self.log.append("pass")
        return super().run(items)

    def run_staged(self, items, stages):
        parts = self.runner.run_staged(items, stages)
        try:
            while True:
                self.log.append("stage")
                try:
                    next(parts)
                except StopIteration as done:
                    return done.value
                yield
        except GeneratorExit:
            self.dropped += 1
            raise


def staged_batcher(backend: TorchBackend) -> TorchBatcher:
    """A batcher whose long prompts beside decoding streams go in 5-token chunks, each
    computed in 3 stages (stories260K's 5 layers: 2, 2 and 1)."""
    batcher = backend.batcher(4)
    batcher.runner = StagedRunner(batcher.runner)
    batcher.scheduler.chunk_stages = 3
    batcher.scheduler.pacer = RecordingPacer()
    return batcher


def test_a_long_prompt_beside_streams_goes_in_stages_with_the_output_alone(stories, prompts, alone):
    long = prompts[2] * 3
    long_alone = run_alone(stories.batcher(4), long, GREEDY, TOKENS)
    batcher = staged_batcher(stories)
    got = run_together(
        batcher, [prompts[0], prompts[1], long], [GREEDY] * 3, (0, 0, 2), [TOKENS] * 3
    )
    assert got == [alone[0], alone[1], long_alone]
    log = batcher.runner.log
    assert log.count("stage") >= 6 and log.count("stage") % 3 == 0  # whole chunks, in 3
    assert "stage,stage" not in ",".join(log)  # the streams' pass between any two stages


def test_a_sequence_finished_between_stages_drops_its_chunk(stories, prompts, alone):
    batcher = staged_batcher(stories)
    tokens: dict[int, list[int]] = {0: [], 1: [], 2: []}
    batcher.add(0, prompts[0], GREEDY)
    batcher.add(1, prompts[1], GREEDY)

    def step() -> None:
        for result in batcher.step():
            tokens[result.seq_id].append(result.token)

    step()
    batcher.add(2, prompts[2] * 3, GREEDY)
    while batcher.runner.log[-1] != "stage":
        step()
    batcher.finish(2)  # its client goes away between two stages of its chunk
    while len(tokens[0]) < TOKENS or len(tokens[1]) < TOKENS:
        step()
    assert batcher.runner.dropped == 1
    assert tokens[2] == []  # its prompt never finished
    assert [tokens[0][:TOKENS], tokens[1][:TOKENS]] == alone[:2]
    batcher.finish(0)
    batcher.finish(1)
    blocks = batcher.scheduler.blocks
    assert blocks.available == blocks.num_blocks


def test_a_failing_stage_ends_only_its_own_request(stories, prompts, alone):
    broken = [*prompts[2] * 3, 10**6]  # its last chunk cannot be embedded
    errors: dict[int, Exception] = {}
    batcher = staged_batcher(stories)
    got = run_together(
        batcher, [prompts[0], prompts[1], broken], [GREEDY] * 3, (0, 0, 2), [TOKENS] * 3, errors
    )
    assert list(errors) == [2]
    assert got[:2] == alone[:2]
    assert batcher.runner.log.count("stage") >= 3


def test_a_sequence_preempted_between_stages_is_computed_again_with_the_output_alone(
    stories_path: Path, prompts
):
    options = EngineOptions(threads=1, kv_cache_tokens=72, block_size=4, max_batch_tokens=16)
    backend = TorchBackend(str(stories_path), quantization="fp32", options=options)
    backend.load()
    long = prompts[2] * 6
    lengths = [40, 40, TOKENS]
    alone = [
        run_alone(backend.batcher(4), prompt, GREEDY, n)
        for prompt, n in zip([prompts[0], prompts[1], long], lengths, strict=True)
    ]
    batcher = staged_batcher(backend)
    got = run_together(batcher, [prompts[0], prompts[1], long], [GREEDY] * 3, (0, 0, 2), lengths)
    assert batcher.runner.dropped >= 1  # the streams' growth took the long prompt's blocks
    assert got == alone
