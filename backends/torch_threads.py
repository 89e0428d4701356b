"""CPU threads for torch: how many, and one model computing at a time.

torch.set_num_threads sets the intra-op (OpenMP) team of the thread that calls it, so
each model-owner thread sets its own after loading. Two CPU models stepping at the same
time would then run two teams on the same cores and slow each other down (spinning
OpenMP workers make oversubscription much worse than a 2x split). So every CPU step
takes CPU_COMPUTE: models on the CPU take turns step by step, each step using all of its
`threads`; a GPU model does not take it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

CPU_COMPUTE = threading.Lock()


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
