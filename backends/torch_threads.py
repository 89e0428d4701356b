"""CPU threads for torch: how many, and one model computing at a time.

torch.set_num_threads acts process-wide (measured with torch 2.13: a count set on one
thread is what every thread then runs with), and two CPU models stepping at the same
time would run two OpenMP teams on the same cores, slowing each other down far more
than a 2x split (waiting workers spin). So every CPU step takes CPU_COMPUTE -- models on
the CPU take turns step by step -- and sets its own model's thread count inside it (a
no-op unless two models are configured differently). A GPU model does not take it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import torch

CPU_COMPUTE = threading.Lock()


def use_threads(count: int) -> None:
    """Make torch's intra-op thread count `count` (call it holding CPU_COMPUTE)."""
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads do not help a matmul)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    logical = usable or os.cpu_count() or 1
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return logical
    cores: set[tuple[str, str]] = set()
    physical = core = ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            physical = value.strip()
        elif key == "core id":
            core = value.strip()
            cores.add((physical, core))
    if not cores:
        return logical
    # with an affinity mask narrower than the machine, assume it splits cores evenly
    siblings = max(1, (os.cpu_count() or logical) // len(cores))
    return max(1, min(len(cores), logical // siblings))
