"""Plugins' `transform_output` hooks over one generation's events, in listed order.

Each piece of text passes through every transform before anything else sees it -- the
client, the stored history, the `on_token` observers -- so all of them see the same
text on every transport. A transform returns the text to send (maybe "" to hold text
back, maybe more than it got to release held text); its last call has `final=True`
(at a natural end, or when a transform stopped the generation) so that it can release
what it holds. A generation that fails or whose client goes away gets no final call:
held text is dropped with it, since nobody receives it.

`generation.stop(reason)` ends the generation after the current piece: the transforms
after the stopping one get that piece with `final=True`; the engine drops the request.
A transform that raises fails the generation (fail_closed: the client gets an error
instead of text that was not filtered) or is skipped for that piece (fail_open).
"""

from __future__ import annotations

from collections.abc import Sequence

from inferd.backends.base import GenerationStats, TokenEvent
from inferd.plugin_failures import FailureLog
from inferd.plugin_hooks import Hook
from inferd.plugins.base import Generation

NATURAL_ENDS = ("stop", "length")
HOOK = "transform_output"


class OutputTransforms:
    """The Stream's output filter (inferd/stream.py) for one generation."""

    def __init__(self, hooks: Sequence[Hook], generation: Generation, failures: FailureLog):
        self._hooks = list(hooks)
        self._generation = generation
        self._failures = failures
        # Some transform is `async def`: the Stream must await `apply_async`.
        self.awaits = any(hook.is_async for hook in self._hooks)

    def apply(self, event: TokenEvent, stats: GenerationStats) -> TokenEvent:
        if event.finish_reason is not None and event.finish_reason not in NATURAL_ENDS:
            return event
        text, final = event.text, event.finish_reason is not None
        for hook in self._hooks:
            try:
                text = _checked(hook.call(self._generation, text, final))
            except Exception as error:
                if self._failed(hook, error):
                    return self._error(hook, stats)
            final = final or self._generation.stop_reason is not None
        return self._result(event, text, stats)

    async def apply_async(self, event: TokenEvent, stats: GenerationStats) -> TokenEvent:
        if event.finish_reason is not None and event.finish_reason not in NATURAL_ENDS:
            return event
        text, final = event.text, event.finish_reason is not None
        for hook in self._hooks:
            try:
                text = _checked(await hook.run(self._generation, text, final))
            except Exception as error:
                if self._failed(hook, error):
                    return self._error(hook, stats)
            final = final or self._generation.stop_reason is not None
        return self._result(event, text, stats)

    def _failed(self, hook: Hook, error: Exception) -> bool:
        """Log the failure; True when it must end the generation (fail_closed)."""
        self._failures.record(hook.plugin_name, HOOK, error)
        return hook.fail_closed

    def _error(self, hook: Hook, stats: GenerationStats) -> TokenEvent:
        message = f"plugin {hook.plugin_name!r} failed while filtering the output"
        return TokenEvent(finish_reason="error", error=message, stats=stats)

    def _result(self, event: TokenEvent, text: str, stats: GenerationStats) -> TokenEvent:
        reason = self._generation.stop_reason
        if reason is not None and event.finish_reason != reason:
            return TokenEvent(text=text, token_id=event.token_id, finish_reason=reason, stats=stats)
        if text == event.text:
            return event
        return TokenEvent(
            text=text,
            token_id=event.token_id,
            finish_reason=event.finish_reason,
            error=event.error,
            stats=event.stats,
        )


def _checked(text: object) -> str:
    if not isinstance(text, str):
        raise TypeError(f"transform_output must return a str, not {type(text).__name__}")
    return text
