"""glibc's allocator, told to keep the memory a CPU model frees for its next step.

Every step allocates and frees the same large temporaries: the KV gathered for each
layer's attention (megabytes at 32 streams), the logits, the matmul outputs. By default
glibc serves blocks above its (adaptive) mmap threshold with fresh mappings and hands the
top of its heap back to the OS once 128 KiB of it is free, so the next step takes the
same pages again, one page fault each. Keeping them made a 32-stream decode step of
Qwen2.5-0.5B (int8, 2 threads) 1.10x faster; one stream does not change. The cost: up
to KEEP_FREE_BYTES of freed memory stays with the process instead of going back.

The thresholds hold for glibc's main arena only. A thread's first allocation gives it an
arena of its own, made of 64 MiB heaps that are unmapped as soon as they are empty,
whatever the trim threshold -- and a model computes on its owner thread: an 8 x 64-token
prompt step of that model, whose temporaries run to 20 MB each, took ~8,000 page faults
there against ~3,000 on the main thread, and in some server processes 52,000-120,000
(0.55-0.65 s instead of 0.47-0.55) in the steps where a heap had just gone. So one
arena serves every thread created after this is set: the registry sets it before it
starts a CPU model's thread.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import platform

log = logging.getLogger("inferd.torch")

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest on 64 bits; the logits of a step fit
KEEP_FREE_BYTES = 1 << 30


@functools.cache
def keep_freed_memory() -> bool:
    """Set glibc's thresholds and its one arena once per process (before the threads that
    compute start); False where the C library is not glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    done = (
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        and mallopt(_M_TRIM_THRESHOLD, KEEP_FREE_BYTES)
        and mallopt(_M_ARENA_MAX, 1)
    )
    if not done:
        log.info("glibc refused the malloc thresholds; freed memory goes back to the OS")
    return bool(done)
