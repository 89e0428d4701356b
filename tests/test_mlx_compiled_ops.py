"""backends/mlx_compiled_ops.py: compiled norm and RoPE give mlx's own bits.

The compiled functions are traced once and reused, so each check runs several shapes and
positions through the same one: a trace that kept its first shape or position would
give wrong numbers on the later calls.
"""

from __future__ import annotations

from typing import Any

from tests.mlx_support import require_stories
from tests.owner import Owner

STORIES = require_stories()


def test_norm_gives_mlx_bits_for_every_shape(owner: Owner) -> None:
    def run() -> list[tuple[str, tuple[int, ...], bool]]:
        import mlx.core as mx
        import mlx.nn as nn

        from inferd.backends.mlx_compiled_ops import CompiledRMSNorm

        mx.random.seed(0)
        same = []
        for dtype in (mx.float32, mx.bfloat16):
            norm = nn.RMSNorm(64, eps=1e-5)
            norm.weight = mx.random.normal((64,)).astype(dtype)
            compiled = CompiledRMSNorm(norm)
            for shape in [(1, 1, 64), (8, 1, 64), (1, 17, 64), (3, 5, 64)]:
                x = mx.random.normal(shape).astype(dtype)
                same.append((str(dtype), shape, mx.array_equal(compiled(x), norm(x)).item()))
        return same

    results = owner(run)
    assert len(results) == 8
    assert all(equal for _, _, equal in results), results


def test_rope_gives_mlx_bits_at_every_position(owner: Owner) -> None:
    def run() -> dict[str, bool]:
        import mlx.core as mx
        import mlx.nn as nn

        from inferd.backends.mlx_compiled_ops import CompiledRoPE

        mx.random.seed(1)
        rope = nn.RoPE(8, base=10000)
        compiled = CompiledRoPE(rope)
        same = {}
        for offset in (0, 3, 100, 4):  # a lone row: an int that moves every step
            x = mx.random.normal((1, 8, 1, 8))
            same[f"offset {offset}"] = mx.array_equal(compiled(x, offset), rope(x, offset)).item()
        for offsets in ([4, 9, 250], [5, 10, 251]):  # a batch: one offset per row
            x = mx.random.normal((3, 8, 1, 8))
            rows = mx.array(offsets)
            same[f"rows {offsets}"] = mx.array_equal(compiled(x, rows), rope(x, rows)).item()
        chunk = mx.random.normal((1, 8, 5, 8))  # a prompt chunk: mlx's own path
        same["chunk"] = mx.array_equal(compiled(chunk, 7), rope(chunk, 7)).item()
        return same

    same = owner(run)
    assert len(same) == 7
    assert all(same.values()), same


def test_every_norm_and_plain_rope_is_swapped_and_nothing_else(owner: Owner) -> None:
    def run() -> dict[str, Any]:
        import mlx.nn as nn
        from mlx.utils import tree_flatten
        from mlx_lm import load

        from inferd.backends.mlx_compiled_ops import CompiledRMSNorm, CompiledRoPE, compile_ops

        model, _ = load(str(STORIES))
        before = dict(tree_flatten(model.parameters()))
        swapped = compile_ops(model)
        after = dict(tree_flatten(model.parameters()))
        kinds = [type(m) for _, m in model.named_modules()]

        class ScaledRoPE(nn.RoPE):  # a variant: computes something else, left alone
            pass

        holder = nn.Module()
        holder.ropes = [ScaledRoPE(8), nn.RoPE(8)]
        return {
            "swapped": swapped,
            "norms": kinds.count(CompiledRMSNorm),
            "ropes": kinds.count(CompiledRoPE),
            "plain left": kinds.count(nn.RMSNorm) + kinds.count(nn.RoPE),
            "same parameters": before.keys() == after.keys()
            and all(before[k] is after[k] for k in before),
            "variant": (compile_ops(holder), [type(r).__name__ for r in holder.ropes]),
        }

    out = owner(run)
    # stories260K: 5 layers with two norms and one RoPE each, and the final norm
    assert (out["swapped"], out["norms"], out["ropes"], out["plain left"]) == (16, 11, 5, 0)
    assert out["same parameters"]
    assert out["variant"] == (1, ["ScaledRoPE", "CompiledRoPE"])


def test_backend_generates_mlx_lm_s_greedy_tokens(owner: Owner) -> None:
    """The backend (compiled here: MLX runs on the CPU) batching three prompts gives each
    the tokens mlx-lm's own model gives it alone."""

    def run() -> dict[str, Any]:
        import mlx.core as mx
        from mlx_lm import load
        from mlx_lm.models.cache import make_prompt_cache

        from inferd.backends.base import SamplingParams
        from inferd.backends.mlx_backend import MlxBackend
        from inferd.backends.mlx_compiled_ops import CompiledRMSNorm

        prompts = [[1, 403, 407, 261, 378], [1, 66, 300, 45], [1, 9, 81, 256, 88, 401, 12]]
        plain, _ = load(str(STORIES))
        expected = []
        for prompt in prompts:
            cache, tokens, inputs = make_prompt_cache(plain), [], prompt
            for _ in range(30):
                logits = plain(mx.array([inputs]), cache=cache)
                tokens.append(mx.argmax(logits[0, -1]).item())
                inputs = tokens[-1:]
            expected.append(tokens)

        backend = MlxBackend(str(STORIES))
        backend.load()
        batcher = backend.batcher(4)
        greedy = SamplingParams(temperature=0.0, max_tokens=1 << 20)
        for index, prompt in enumerate(prompts):
            batcher.add(index, prompt, greedy)
        got: list[list[int]] = [[] for _ in prompts]
        while any(len(tokens) < 30 for tokens in got):
            for result in batcher.step():
                got[result.seq_id].append(result.token)
        compiled = any(isinstance(m, CompiledRMSNorm) for _, m in batcher.model.named_modules())
        batcher.close()  # not backend.close(): it ends MLX on this thread, which the next tests use
        return {"expected": expected, "got": [tokens[:30] for tokens in got], "compiled": compiled}

    out = owner(run)
    assert out["compiled"]
    assert out["got"] == out["expected"]


def test_an_mlx_that_cannot_run_them_keeps_its_own_layers(owner: Owner, monkeypatch) -> None:
    """Where the compiled RoPE fails (an mlx without array offsets, say), nothing is
    swapped and the model decodes as mlx-lm's own."""

    def run() -> dict[str, Any]:
        import mlx.nn as nn
        from mlx_lm import load

        from inferd.backends import mlx_compiled_ops

        def no_array_offsets(*settings: object) -> Any:
            def rope(x: Any, offset: Any) -> Any:
                raise ValueError("[rope] offset must be an int")

            return rope

        monkeypatch.setattr(mlx_compiled_ops, "_rope", no_array_offsets)
        mlx_compiled_ops.compiled_ops_agree.cache_clear()
        try:
            model, _ = load(str(STORIES))
            swapped = mlx_compiled_ops.compile_ops(model)
            kinds = [type(m) for _, m in model.named_modules()]
            return {"swapped": swapped, "own": kinds.count(nn.RMSNorm) + kinds.count(nn.RoPE)}
        finally:
            mlx_compiled_ops.compiled_ops_agree.cache_clear()  # the real check again next

    assert owner(run) == {"swapped": 0, "own": 16}
