"""benchmarks/bench_mlx_ops.py: it sets mlx's own ops against the compiled ones."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.mlx_support import require_stories
from tests.owner import Owner

STORIES = require_stories()
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_one_side_is_mlx_lm_s_model_the_other_compiled_and_both_decode(owner: Owner) -> None:
    def run() -> dict[str, tuple[int, int, list[int]]]:
        from bench_mlx_ops import batchers

        from inferd.backends.mlx_compiled_ops import CompiledRMSNorm, CompiledRoPE

        sides = {}
        for name, batcher in batchers(STORIES, rows=2, prompt_tokens=8).items():
            kinds = [type(m) for _, m in batcher.model.named_modules()]
            tokens = [r.token for _ in range(4) for r in batcher.step()]
            sides[name] = (kinds.count(CompiledRMSNorm), kinds.count(CompiledRoPE), tokens)
            batcher.close()
        return sides

    sides = owner(run)
    assert sides["mlx ops"][:2] == (0, 0)
    assert sides["compiled"][:2] == (11, 5)
    assert len(sides["compiled"][2]) >= 4  # two rows decoded
    assert sides["compiled"][2] == sides["mlx ops"][2]
