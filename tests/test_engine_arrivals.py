"""inferd/engine.py: an idle worker gathers requests sent together into its first step
(`arrival_window`); a busy one takes what arrived into its next step at once."""

from __future__ import annotations

import asyncio
import time

from inferd.testing.fakes import REPLY
from tests.engine_doubles import (
    LabelledBackend,
    collect,
    encoding,
    open_during_a_step,
    sampling,
)


async def test_an_idle_worker_starts_requests_sent_together_in_one_step(make_worker):
    backend = LabelledBackend()
    worker = make_worker(backend, arrival_window=0.5)
    await worker.ready()
    first = asyncio.ensure_future(worker.open(encoding("A"), sampling(max_tokens=2)))
    await asyncio.sleep(0.05)  # B arrives well within A's window
    second = await worker.open(encoding("B"), sampling(max_tokens=2))
    assert (await collect(await first))[0] == (await collect(second))[0] == REPLY[:2]
    assert backend.schedule[:4] == ["encode A", "encode B", "A", "B"]


async def test_arrivals_that_keep_coming_hold_the_first_step_for_a_bounded_time(make_worker):
    backend = LabelledBackend()
    worker = make_worker(backend, max_concurrent=64, arrival_window=0.05)  # gathers <= 0.4 s
    await worker.ready()
    opening = []
    for i in range(40):  # one every 20 ms, for 0.8 s: each within the window of the last
        request = worker.open(encoding(f"r{i}"), sampling(max_tokens=1))
        opening.append(asyncio.ensure_future(request))
        await asyncio.sleep(0.02)
    for stream in await asyncio.gather(*opening):
        await collect(stream)
    assert backend.schedule.index("r0") < backend.schedule.index("encode r39")


async def test_a_busy_worker_takes_a_new_request_into_its_next_step_without_waiting(make_worker):
    backend, _, first, opening = await open_during_a_step(
        make_worker, max_tokens=3, arrival_window=1.0
    )
    released = time.monotonic()
    backend.hold.set()
    second = await asyncio.wait_for(opening, 5)
    await collect(second)
    assert time.monotonic() - released < 0.5  # not another window
    assert backend.schedule[:4] == ["A", "encode B", "A", "B"]
    await collect(first)
