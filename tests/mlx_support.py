"""What the MLX tests share: skipping when MLX cannot run, the real tiny model, and KV
caches filled with known numbers (no model) to check position by position."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from inferd.backends.mlx_backend import mlx_available

STORIES = Path(__file__).parents[2] / "shared" / "models" / "stories260K"


def require_mlx() -> None:
    """Skip the calling test module when mlx / mlx-lm cannot be imported."""
    if not mlx_available():
        pytest.skip(
            "mlx/mlx-lm not importable (pip install 'inferd[mlx]'; on Linux also 'mlx[cpu]')",
            allow_module_level=True,
        )


def require_stories() -> Path:
    """stories260K's directory; skips the calling module without MLX or the model."""
    require_mlx()
    if not (STORIES / "model.safetensors").is_file():
        pytest.skip(f"stories260K not found at {STORIES}", allow_module_level=True)
    return STORIES


def filled(count: int, start: float = 0.0, layers: int = 2) -> list[Any]:
    """A KV cache of `layers` layers holding `count` positions valued start, start+1, ..."""
    import mlx.core as mx
    from mlx_lm.models.cache import KVCache

    cache = [KVCache() for _ in range(layers)]
    values = (mx.arange(count, dtype=mx.float32) + start).reshape(1, 1, count, 1)
    for layer in cache:
        layer.update_and_fetch(values, values)
    return cache
