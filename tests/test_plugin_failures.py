"""inferd/plugin_failures.py: one traceback per kind of failure, then a count per interval."""

from __future__ import annotations

import logging

from inferd.plugin_failures import FailureLog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "inferd.plugins"]


def test_a_failure_is_logged_once_per_kind_then_counted(caplog):
    clock = Clock()
    failures = FailureLog(interval=60.0, clock=clock)
    with caplog.at_level(logging.ERROR, logger="inferd.plugins"):
        for _ in range(1600):
            failures.record("audit", "on_token", RuntimeError("boom"))
        failures.record("audit", "on_token", KeyError("x"))  # another kind
        failures.record("audit", "on_finished", RuntimeError("boom"))  # another hook
        clock.now += 61
        failures.record("audit", "on_token", RuntimeError("boom again"))
        failures.record("audit", "on_token", RuntimeError("boom again"))
    assert messages(caplog) == [
        "plugin 'audit' failed in on_token (repeats of this failure are counted, and logged "
        "at most every 60 s)",
        "plugin 'audit' failed in on_token (repeats of this failure are counted, and logged "
        "at most every 60 s)",
        "plugin 'audit' failed in on_finished (repeats of this failure are counted, and "
        "logged at most every 60 s)",
        "plugin 'audit' failed in on_token 1600 more times in the last 61 s; the latest: "
        "RuntimeError: boom again",
    ]
    assert caplog.records[0].exc_info is not None  # the first one has its traceback
    assert caplog.records[-1].exc_info is None
