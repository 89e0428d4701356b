"""Keep Python's cyclic garbage collector off the objects a loaded model lives with.

Loading a model leaves hundreds of thousands of tracked Python objects that live as
long as the process: transformers' modules, and for a compiled engine dynamo's and
inductor's caches -- 516,000 after Qwen2.5-0.5B's int8 engine compiled its graphs. A
collection of the oldest generation walks all of them with the GIL held: 236-241 ms on
2 cores. Serving allocates few objects that outlive a collection (two of the middle
generation's in 192 requests), so that collection comes rarely -- three ran while the
model loaded, none in those requests -- but when it comes, every stream stalls for a
quarter of a second. gc.freeze() moves them to a permanent generation that collections
never walk: a full collection then took under 0.1 ms. vLLM freezes its heap after
start-up the same way (freeze_gc_heap). A collection first, so that no garbage of the
load is kept with them: 0.2-0.3 s with the GIL held, once per load (a model loaded
while others serve pauses their streams that long, once).
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger("inferd.engine")


def freeze_loaded_objects() -> int:
    """Collect, then exempt every object alive now from later collections; returns how
    many are exempt in all (process-wide: each model's load adds its own)."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info(
        "%d long-lived Python objects kept out of garbage collection (%.0f ms)",
        frozen,
        1e3 * (time.perf_counter() - started),
    )
    return frozen
