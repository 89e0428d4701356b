"""Shared by the batching tests: their prompts and parameters, and `run_alone` /
`run_together` (inferd/testing/batching.py), which drive any Batcher (the torch and MLX
engines) with requests joining and leaving at given steps."""

from __future__ import annotations

from inferd.backends.base import SamplingParams
from inferd.testing.batching import run_alone, run_together

GREEDY = SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=64)
PROMPTS = ("Once upon a time", "Tom and Sue went to the park", "There was a tree", "Lily had")
TOKENS = 24

__all__ = ["GREEDY", "PROMPTS", "TOKENS", "run_alone", "run_together"]
