"""benchmarks/bench_batch_invariance.py: its comparison, and a smoke run of the script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from bench_batch_invariance import STORIES, first_difference  # noqa: E402


def test_first_difference_is_the_first_position_that_differs():
    assert first_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert first_difference([7], [8]) == 0


@pytest.mark.real_model
@pytest.mark.skipif(not STORIES.is_dir(), reason=f"{STORIES} is absent")
def test_the_script_compares_batched_and_alone_requests_for_both_prompt_kinds():
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_batch_invariance.py"), "--cases", "2",
         "--precisions", "fp32"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = [line.split() for line in done.stdout.splitlines() if line.strip().startswith("fp32")]
    assert [row[1] for row in rows] == ["story", "random"]
    assert all(int(row[2]) >= 4 and 0 <= int(row[3]) <= int(row[2]) for row in rows)


def test_shared_prompts_open_alike_and_the_others_do_not_need_to():
    import random

    from bench_batch_invariance import prompts_of

    story = list(range(100, 300))  # no token repeats: a common prefix is a shared opening
    for seed in range(5):
        shared = prompts_of("shared", story, 4, random.Random(seed))
        columns = enumerate(zip(*shared, strict=False))  # up to the shortest prompt
        common = next((i for i, column in columns if len(set(column)) > 1), None)
        common = min(map(len, shared)) if common is None else common
        assert common >= 5
        for kind in ("story", "random"):
            assert all(2 <= len(p) <= 60 for p in prompts_of(kind, story, 4, random.Random(seed)))
