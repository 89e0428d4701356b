"""backends/torch_threads.py: physical cores, and CPU models stepping one at a time."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from inferd.backends.torch_backend import EngineOptions, TorchBackend
from inferd.backends.torch_runner import StepOutput
from inferd.backends.torch_threads import physical_cores
from tests.batching import GREEDY, run_alone


def test_physical_cores_is_within_what_the_process_may_use():
    cores = physical_cores()
    assert 1 <= cores <= len(os.sched_getaffinity(0))


@pytest.mark.real_model
def test_two_cpu_models_load_side_by_side_and_never_compute_at_once(stories_path: Path):
    options = EngineOptions(threads=1, kv_cache_tokens=1024)
    inside = []
    overlaps = []

    class Watched:
        """Wraps a runner: notes when two forward passes overlap."""

        def __init__(self, runner) -> None:
            self.runner = runner

        def run(self, items) -> StepOutput:
            inside.append(1)
            overlaps.append(len(inside) > 1)
            time.sleep(0.002)  # widen the window an overlap would need
            try:
                return self.runner.run(items)
            finally:
                inside.pop()

    def generate(results: list[list[int]]) -> None:
        backend = TorchBackend(str(stories_path), quantization="fp32", options=options)
        backend.load()
        batcher = backend.batcher(1)
        batcher.runner = Watched(batcher.runner)
        results.append(run_alone(batcher, [1, 403, 407], GREEDY, 30))

    results: list[list[int]] = []
    threads = [threading.Thread(target=generate, args=(results,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2 and results[0] == results[1]
    assert len(overlaps) >= 60 and not any(overlaps)
