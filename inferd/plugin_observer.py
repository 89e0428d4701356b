"""One generation's plugin hooks: the engine Stream's observer (inferd/stream.py).

The Stream calls `on_admitted`, `on_token` and `on_finished` on the event loop as it
consumes events; this observer fans them out to the plugins' lifecycle hooks and offers
the plugins' `transform_output` hooks as the Stream's `output_filter`.

Lifecycle hooks observe; they never change or stop a stream. A synchronous one runs
inline and one that raises is logged (rate-limited, inferd/plugin_failures.py) and
skipped. An `async def` one runs in a background task, one per generation, that awaits
each hook in the order the events happened, so a slow audit write never delays a token;
`BackgroundHooks.drain` waits for them (at server stop, and in tests).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from inferd.backends.base import GenerationStats, TokenEvent
from inferd.output_transforms import OutputTransforms
from inferd.plugin_failures import FailureLog
from inferd.plugin_hooks import LIFECYCLE, Hook, HookTable
from inferd.plugins.base import Generation


class BackgroundHooks:
    """The tasks running async lifecycle hooks, kept so they finish and can be awaited."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, lane: HookLane) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(lane.run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until every queued async hook has run (new ones included); raises
        asyncio.TimeoutError after `timeout` seconds."""

        async def all_done() -> None:
            while self._tasks:
                await asyncio.wait(set(self._tasks))

        await asyncio.wait_for(all_done(), timeout)


class HookLane:
    """One generation's async lifecycle hooks, run one after another in a task."""

    def __init__(self, background: BackgroundHooks, failures: FailureLog) -> None:
        self._background = background
        self._failures = failures
        self._queue: deque[tuple[Hook, str, tuple[Any, ...]]] = deque()
        self._task: asyncio.Task[None] | None = None

    def put(self, hook: Hook, name: str, args: tuple[Any, ...]) -> None:
        self._queue.append((hook, name, args))
        if self._task is None:
            self._task = self._background.start(self)

    async def run(self) -> None:
        try:
            while self._queue:
                hook, name, args = self._queue.popleft()
                try:
                    await hook.run(*args)
                except Exception as error:
                    self._failures.record(hook.plugin_name, name, error)
        finally:
            self._task = None  # the next put starts a new task


class GenerationObserver:
    """Feeds one generation's engine events to every plugin."""

    def __init__(
        self,
        hooks: HookTable,
        generation: Generation,
        failures: FailureLog,
        background: BackgroundHooks,
    ) -> None:
        self.generation = generation
        self._hooks = {name: hooks[name] for name in LIFECYCLE}
        self._failures = failures
        self._lane = HookLane(background, failures)
        self._seen_token = False
        transforms = hooks["transform_output"]
        self.output_filter = (
            OutputTransforms(transforms, generation, failures) if transforms else None
        )

    def each(self, name: str, *args: object) -> None:
        for hook in self._hooks[name]:
            if hook.is_async:
                self._lane.put(hook, name, (self.generation, *args))
                continue
            try:
                hook.call(self.generation, *args)
            except Exception as error:
                self._failures.record(hook.plugin_name, name, error)

    def on_admitted(self, stats: GenerationStats) -> None:
        self.generation.stats = stats
        self.each("on_admitted")

    def on_token(self, event: TokenEvent, stats: GenerationStats) -> None:
        self.generation.stats = stats
        if not self._seen_token:
            self._seen_token = True
            self.each("on_first_token")
        self.each("on_token", event)

    def on_finished(self, stats: GenerationStats) -> None:
        self.generation.stats = stats
        self.each("on_finished")
