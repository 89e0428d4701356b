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
