"""inferd/plugin_observer.py: async lifecycle hooks run in order, in the background."""

from __future__ import annotations

import asyncio
import logging

from inferd.plugin_failures import FailureLog
from inferd.plugin_hooks import Hook
from inferd.plugin_observer import BackgroundHooks, HookLane
from inferd.plugins.base import Plugin


class Slow(Plugin):
    name = "slow"


def hook(fn) -> Hook:
    return Hook(0, Slow(), fn, True, False)


async def test_a_lane_runs_its_hooks_in_order_and_drain_waits_for_them():
    background, seen = BackgroundHooks(), []

    async def record(value: int) -> None:
        await asyncio.sleep(0.001 * (5 - value))  # later ones are quicker
        seen.append(value)

    lane = HookLane(background, FailureLog())
    for value in range(5):
        lane.put(hook(record), "on_token", (value,))
    assert seen == []  # nothing ran inline
    await background.drain(5)
    assert seen == [0, 1, 2, 3, 4]
    assert background.pending == 0
    lane.put(hook(record), "on_token", (4,))  # an idle lane starts again
    await background.drain(5)
    assert seen[-1] == 4


async def test_a_failing_async_hook_is_logged_and_the_next_one_runs(caplog):
    background, seen = BackgroundHooks(), []

    async def fail(value: int) -> None:
        raise RuntimeError("audit server down")

    async def record(value: int) -> None:
        seen.append(value)

    lane = HookLane(background, FailureLog())
    lane.put(hook(fail), "on_finished", (1,))
    lane.put(hook(record), "on_finished", (2,))
    with caplog.at_level(logging.ERROR, logger="inferd.plugins"):
        await background.drain(5)
    assert seen == [2]
    assert "plugin 'slow' failed in on_finished" in caplog.text
