"""backends/torch_threads.py: physical cores, and CPU models stepping one at a time."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import torch

from inferd.backends.torch_backend import EngineOptions, TorchBackend
from inferd.backends.torch_runner import StepOutput
from inferd.backends.torch_threads import physical_cores
from tests.batching import GREEDY, run_alone


def test_physical_cores_is_within_what_the_process_may_use():
    cores = physical_cores()
    assert 1 <= cores <= len(os.sched_getaffinity(0))


@pytest.mark.real_model
def test_two_cpu_models_load_side_by_side_and_step_in_turn_on_their_own_threads(
    stories_path: Path,
):
    inside = []
    overlaps = []
    threads_seen: dict[int, set[int]] = {1: set(), 2: set()}

    class Watched:
        """Wraps a runner: notes overlapping forward passes and the thread count used."""

        def __init__(self, runner, threads: int) -> None:
            self.runner = runner
            self.threads = threads

        def runs_apart(self, items) -> bool:
            return self.runner.runs_apart(items)

        def run(self, items) -> StepOutput:
            inside.append(1)
            overlaps.append(len(inside) > 1)
            threads_seen[self.threads].add(torch.get_num_threads())
            time.sleep(0.002)  # widen the window an overlap would need
            try:
                return self.runner.run(items)
            finally:
                inside.pop()

    def generate(threads: int, results: list[list[int]]) -> None:
        options = EngineOptions(threads=threads, kv_cache_tokens=1024)
        backend = TorchBackend(str(stories_path), quantization="fp32", options=options)
        backend.load()  # both at once: transformers' loading is not thread-safe by itself
        batcher = backend.batcher(1)
        batcher.runner = Watched(batcher.runner, threads)
        results.append(run_alone(batcher, [1, 403, 407], GREEDY, 30))

    results: list[list[int]] = []
    workers = [threading.Thread(target=generate, args=(n, results)) for n in (1, 2)]
    before = torch.get_num_threads()
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        torch.set_num_threads(before)
    assert len(results) == 2 and results[0] == results[1]
    assert len(overlaps) >= 60 and not any(overlaps)
    # torch's thread count is process-wide: each step sets its own model's
    assert threads_seen == {1: {1}, 2: {2}}
