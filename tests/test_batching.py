"""Greedy output under concurrency equals the output alone, token for token.

The torch engine (backends/torch_batcher.py) on the real stories260K, in fp32: requests
joining and leaving a running batch, prompts prefilled in chunks beside decoding
streams, prefixes taken from the cache, and sequences preempted when memory runs out.
Block size 4 and small token budgets make short prompts cross all of those paths.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch._dynamo.utils import counters

from inferd.backends import (
    torch_attention,
    torch_backend,
    torch_batcher,
    torch_int8,
    torch_runner,
    torch_sampler,
)
from inferd.backends.base import SamplingParams
from inferd.backends.torch_attention import decode_split
from inferd.backends.torch_attention_blocks import KEY_BLOCK
from inferd.backends.torch_backend import EngineOptions, TorchBackend
from inferd.backends.torch_batcher import TorchBatcher
from inferd.backends.torch_int8 import onednn_int8_is_exact
from tests.batching import GREEDY, PROMPTS, TOKENS, run_alone, run_together

pytestmark = pytest.mark.real_model
OPTIONS = EngineOptions(threads=1, kv_cache_tokens=2048, block_size=4, max_batch_tokens=16)
LONG_PROMPT = (
    "Once upon a time, there was a little girl named Lily. She loved to play outside in "
    "the park. One day, she saw a big, red ball. She wanted to play with it, but it was "
    "too high. Lily's mom said"
)


@pytest.fixture(scope="module")
def stories(stories_path: Path) -> TorchBackend:
    backend = TorchBackend(str(stories_path), quantization="fp32", options=OPTIONS)
    backend.load()
    return backend


def batcher(backend: TorchBackend, **options: int) -> TorchBatcher:
    """The backend's batcher with OPTIONS changed by `options` (its `compile` kept)."""
    options.setdefault("compile", backend.options.compile)
    backend.options = dataclasses.replace(OPTIONS, **options)
    return backend.batcher(8)


def ids(backend: TorchBackend, *texts: str) -> list[list[int]]:
    return [backend.encode_text(text) for text in texts]


def expected(backend: TorchBackend, prompts, params, n: int = TOKENS) -> list[list[int]]:
    """Each prompt decoded alone, without prefix reuse."""
    return [
        run_alone(batcher(backend, prefix_cache_tokens=0), prompt, p, n)
        for prompt, p in zip(prompts, params, strict=True)
    ]


def test_staggered_joins_and_leaves_give_the_output_alone(stories):
    prompts = ids(stories, *PROMPTS)
    alone = expected(stories, prompts, [GREEDY] * 4)
    lengths = [TOKENS, 10, TOKENS, 5]  # two leave early, while others keep going
    together = run_together(batcher(stories), prompts, [GREEDY] * 4, (0, 0, 3, 7), lengths)
    assert together == [tokens[:n] for tokens, n in zip(alone, lengths, strict=True)]


def test_each_row_keeps_its_own_sampling_params(stories):
    params = [
        GREEDY,
        SamplingParams(temperature=0.9, top_k=20, top_p=0.9, seed=7),
        SamplingParams(temperature=0.0, repeat_penalty=1.5),
        SamplingParams(temperature=1.2, top_k=0, top_p=1.0, seed=3),
    ]
    prompts = ids(stories, *PROMPTS)
    alone = expected(stories, prompts, params)
    assert run_together(batcher(stories), prompts, params, (0, 1, 2, 0), [TOKENS] * 4) == alone


def test_a_long_prompt_is_prefilled_in_chunks_beside_decoding_streams(stories):
    prompts = ids(stories, PROMPTS[0], PROMPTS[1], LONG_PROMPT)
    alone = expected(stories, prompts, [GREEDY] * 3)
    engine = batcher(stories, max_batch_tokens=8)
    for i in range(2):
        engine.add(i, prompts[i], GREEDY)
    got: list[list[int]] = [[], [], []]
    for result in engine.step():  # both short prompts in, first tokens out
        got[result.seq_id].append(result.token)
    engine.add(2, prompts[2], GREEDY)
    steps_before_first_token = 0
    while len(got[2]) < TOKENS:
        results = {r.seq_id: r.token for r in engine.step()}
        if len(got[0]) < TOKENS:
            # a running stream gets a token on every step of the long prefill
            assert set(results) >= {0, 1}
        steps_before_first_token += not got[2]
        for i, token in results.items():
            got[i].append(token)
    assert steps_before_first_token > 4  # the long prompt really went in chunks
    assert [tokens[:TOKENS] for tokens in got] == alone


def test_a_cached_prefix_gives_the_same_tokens_as_computing_it(stories):
    first = stories.encode_text(LONG_PROMPT)
    engine = batcher(stories)
    answer = run_alone(engine, first, GREEDY, 12)
    # the next turn repeats the first prompt and its answer, then goes on
    follow_up = first + answer + stories.encode_text(" The end. Tom")
    hits = engine.scheduler.prefix_hit_tokens
    reused = run_alone(engine, follow_up, GREEDY, TOKENS)
    # the prompt and the answer's computed whole blocks came from the cache
    assert engine.scheduler.prefix_hit_tokens - hits == (len(first) + 11) // 4 * 4
    assert reused == expected(stories, [follow_up], [GREEDY])[0]


def test_identical_prompts_share_their_blocks(stories):
    prompt = stories.encode_text(LONG_PROMPT)
    engine = batcher(stories)
    engine.add(0, prompt, GREEDY)
    while not engine.step():  # the first one prefills, in chunks
        pass
    hits = engine.scheduler.prefix_hit_tokens
    engine.add(1, prompt, GREEDY)
    engine.step()
    assert engine.scheduler.prefix_hit_tokens - hits == (len(prompt) - 1) // 4 * 4
    # one copy of the shared blocks: each sequence holds only its last block on its own
    blocks = engine.scheduler.blocks
    assert blocks.num_blocks - blocks.available == -(-len(prompt) // 4) + 1
    engine.finish(0)
    engine.finish(1)


def test_preempted_sequences_finish_with_the_output_alone(stories):
    prompts = ids(stories, *PROMPTS)
    alone = expected(stories, prompts, [GREEDY] * 4, 40)
    # 24 blocks of 4 cannot hold four sequences of ~48 tokens: some are preempted
    engine = batcher(stories, kv_cache_tokens=96, prefix_cache_tokens=0)
    assert run_together(engine, prompts, [GREEDY] * 4, (0, 0, 0, 0), [40] * 4) == alone


@pytest.mark.skipif(not onednn_int8_is_exact(), reason="oneDNN's int8 matmul is not exact here")
def test_int8_on_either_kernel_gives_the_same_tokens_alone_and_together(
    stories_path: Path, monkeypatch
):
    """stories260K's weights are all below ONEDNN_MIN_BYTES: lowered to 1 byte, every
    Linear takes oneDNN's kernel, whose integer products are _int_mm's bit for bit."""
    outputs = []
    for min_bytes in (1 << 62, 1):  # every Linear on _int_mm, then every one on oneDNN
        monkeypatch.setattr(torch_int8, "ONEDNN_MIN_BYTES", min_bytes)
        backend = TorchBackend(str(stories_path), quantization="int8", options=OPTIONS)
        backend.load()
        prompts = ids(backend, *PROMPTS)
        alone = expected(backend, prompts, [GREEDY] * 4)
        together = run_together(batcher(backend), prompts, [GREEDY] * 4, (0, 0, 3, 7), [TOKENS] * 4)
        assert together == alone
        outputs.append(alone)
    assert outputs[0] == outputs[1]


def test_the_lean_forward_and_transformers_forward_give_the_same_tokens(stories, monkeypatch):
    """stories260K is a Llama: its runner takes backends/torch_decoder.py's lean pass.
    Decodes, chunked prompts beside them and cached prefixes give the same tokens
    through transformers' own forward."""
    prompts = ids(stories, *PROMPTS, LONG_PROMPT)
    params = [GREEDY] * 5
    joins, lengths = (0, 0, 3, 7, 2), [TOKENS] * 5
    lean = run_together(batcher(stories, max_batch_tokens=8), prompts, params, joins, lengths)
    monkeypatch.setattr(torch_runner, "lean_decoder", lambda model, cache: None)
    plain = run_together(batcher(stories, max_batch_tokens=8), prompts, params, joins, lengths)
    assert lean == plain


@pytest.fixture(scope="module")
def compiled_stories(stories_path: Path) -> TorchBackend:
    """stories260K in int8 (the CPU default) with compiled steps: its batchers share
    the model's graphs, compiled with the first one."""
    options = dataclasses.replace(OPTIONS, compile=True)
    backend = TorchBackend(str(stories_path), quantization="int8", options=options)
    backend.load()
    assert backend.batcher(8).runner.compiled
    return backend


def test_compiled_steps_give_the_same_tokens_alone_and_together(compiled_stories):
    """backends/torch_compiled_decode.py: one graph for any number of decode rows, so a
    sequence alone runs the very loops it runs in a batch."""
    graphs = counters["stats"]["unique_graphs"]
    prompts = ids(compiled_stories, *PROMPTS)
    alone = expected(compiled_stories, prompts, [GREEDY] * 4)
    engine = batcher(compiled_stories)
    together = run_together(engine, prompts, [GREEDY] * 4, (0, 0, 3, 7), [TOKENS] * 4)
    assert together == alone
    # every step, one row or many, ran the graphs compiled at load
    assert counters["stats"]["unique_graphs"] == graphs


def test_compiled_steps_keep_the_tokens_with_chunked_prompts_and_preemption(compiled_stories):
    """Prompt chunks beside decoding streams (a step with both runs its decode rows in a
    pass of their own, a long prompt's chunk in stages between them) and sequences
    preempted and recomputed -- int8's keys and values kept in bfloat16, read back alike
    by decode rows, chunks and whole prompts. Rows past one key block (64 positions) run
    the graphs compiled at load too: the block count is an unbacked size. (The smaller
    cache after them compiles graphs of its own: a cache's size is static.)"""
    assert batcher(compiled_stories).runner.cache.dtype == torch.bfloat16
    graphs = counters["stats"]["unique_graphs"]
    prompts = ids(compiled_stories, *PROMPTS, LONG_PROMPT)
    assert len(prompts[-1]) > KEY_BLOCK  # its rows past one block from the start
    alone = expected(compiled_stories, prompts, [GREEDY] * 5, 40)
    joins, lengths = (0, 0, 3, 7, 2), [40] * 5
    chunked = batcher(compiled_stories, max_batch_tokens=8)
    staged: list[int] = []
    run_staged = chunked.runner.run_staged

    def counted(items, stages):
        staged.append(stages)
        return run_staged(items, stages)

    chunked.runner.run_staged = counted
    assert run_together(chunked, prompts, [GREEDY] * 5, joins, lengths) == alone
    assert staged and set(staged) == {torch_batcher.PREFILL_STAGES}
    assert counters["stats"]["unique_graphs"] == graphs
    # 24 blocks of 4 cannot hold five sequences of ~48 tokens: some are preempted
    tight = batcher(compiled_stories, kv_cache_tokens=96, prefix_cache_tokens=0)
    assert run_together(tight, prompts[:4], [GREEDY] * 4, joins[:4], lengths[:4]) == alone[:4]


@pytest.mark.parametrize("compiled", [False, True])
def test_rows_split_by_length_give_the_output_alone(
    stories, compiled_stories, monkeypatch, compiled
):
    """Decode rows in two groups, each padded to its own longest (torch_attention.
    decode_split), eagerly and compiled: every split the joins and leaves bring (any
    padding saved counts here) keeps each sequence's tokens."""
    backend = compiled_stories if compiled else stories
    prompts = ids(backend, *PROMPTS, LONG_PROMPT)
    alone = expected(backend, prompts, [GREEDY] * 5, 32)
    monkeypatch.setattr(torch_attention, "SPLIT_MIN_POSITIONS", 1)
    splits: list[int] = []

    def counted(lengths):
        splits.append(split := decode_split(lengths))
        return split

    monkeypatch.setattr(torch_runner, "decode_split", counted)
    graphs = counters["stats"]["unique_graphs"]
    engine = batcher(backend)
    assert run_together(engine, prompts, [GREEDY] * 5, (0, 2, 3, 7, 0), [32] * 5) == alone
    assert len(set(splits) - {0}) >= 2  # several different splits ran
    assert counters["stats"]["unique_graphs"] == graphs  # compiled: the graphs of the load


def test_small_models_are_not_compiled_by_default(stories):
    """stories260K loads in a second; compiling would take longer than it could save."""
    assert stories.options.compile is None
    assert not stories.batcher(8).runner.compiled


@pytest.mark.parametrize("quantization", ["int8", "fp32"])
def test_the_size_that_compiles_by_default_is_the_checkpoints_in_every_format(
    stories_path: Path, monkeypatch: pytest.MonkeyPatch, quantization: str
):
    """int8 keeps its weights as buffers, its input embedding table too: the model's
    Parameters after quantizing are only its norms, and counting those turned compiling
    off for every int8 model (1.5x slower decode steps on Qwen2.5-0.5B)."""
    asked: list[bool] = []

    class Recording(torch_runner.ModelRunner):  # records the choice, compiles nothing
        def __init__(self, model, cache, compile_steps: bool = False) -> None:
            asked.append(compile_steps)
            super().__init__(model, cache, False)

    monkeypatch.setattr(torch_backend, "ModelRunner", Recording)
    backend = TorchBackend(str(stories_path), quantization=quantization, options=OPTIONS)
    backend.load()
    weights = 260_032  # stories260K's, its tied embedding counted once
    for threshold in (weights, weights + 1):
        monkeypatch.setattr(torch_backend, "AUTO_MIN_PARAMETERS", threshold)
        backend.batcher(8)
    assert asked == [True, False]


BITWISE_CASES = 12  # without RowStableLinear, bf16 differed from the fifth on


def random_cases(count: int) -> Iterator[tuple[list[list[int]], list[int], list[int]]]:
    """(prompts, joins, lengths) of `count` seeded cases: 2-5 prompts of random ids
    (near-ties everywhere), joining at steps 0-12 and leaving after 16-32 tokens."""
    rng = random.Random(0)
    for _ in range(count):
        n = rng.randint(2, 5)
        prompts = [[rng.randrange(3, 512) for _ in range(rng.randint(2, 60))] for _ in range(n)]
        yield (
            prompts,
            [rng.randint(0, 12) for _ in range(n)],
            [rng.randint(16, 32) for _ in range(n)],
        )


@pytest.mark.parametrize(
    ("quantization", "compiled"), [("int8", False), ("bf16", False), ("bf16", True)]
)
def test_int8_and_bf16_logits_are_the_same_bits_alone_and_together(
    stories_path: Path, monkeypatch: pytest.MonkeyPatch, quantization: str, compiled: bool
):
    """Not only the tokens: every logit a sequence samples from, bit for bit. int8's
    matmuls are exact integer products; bf16's are kept on oneDNN's many-row kernel
    (torch_quant.RowStableLinear: without it, rows differed here), and compiled, its
    decode and prompt graphs round every operation as eager ones do (without that,
    torch_compiled_decode.precision_options, they differed here too)."""
    options = dataclasses.replace(OPTIONS, compile=compiled)
    backend = TorchBackend(str(stories_path), quantization=quantization, options=options)
    backend.load()
    seen: dict[int, list[torch.Tensor]] = {}  # each sampled row's logits, by sequence
    sample = torch_sampler.Sampler.sample

    def recording(self, logits, seqs):
        for row, seq in zip(logits, seqs, strict=True):
            seen.setdefault(seq.seq_id, []).append(row.clone())
        return sample(self, logits, seqs)

    monkeypatch.setattr(torch_sampler.Sampler, "sample", recording)
    bad = []
    for case, (prompts, joins, lengths) in enumerate(random_cases(BITWISE_CASES)):
        alone = []
        for prompt, n in zip(prompts, lengths, strict=True):
            run_alone(batcher(backend, prefix_cache_tokens=0), prompt, GREEDY, n)
            alone.append(seen.pop(0))  # run_alone's sequence is 0
        run_together(batcher(backend), prompts, [GREEDY] * len(prompts), joins, lengths)
        for seq_id, logits in enumerate(alone):
            if not all(map(torch.equal, logits, seen[seq_id])):
                bad.append((case, seq_id))
        seen.clear()
    assert bad == []
