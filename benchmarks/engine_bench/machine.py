"""What the machine is and how busy other work kept it while the benchmark ran."""

from __future__ import annotations

import os
import platform
from pathlib import Path

_PROC_STAT = Path("/proc/stat")


def rss_mib(pid: int | None) -> float | None:
    """A process's resident set in MiB (Linux /proc; None elsewhere or once it is gone)."""
    if pid is None:
        return None
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _machine_seconds() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of all cores since boot, from /proc/stat (Linux only)."""
    try:
        fields = [int(x) for x in _PROC_STAT.read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - idle) / tick, sum(fields) / tick


def _own_seconds() -> float:
    """CPU seconds of this process and of its children that have been waited for."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


class OthersLoad:
    """The share of the machine's CPU that processes other than this run used meanwhile."""

    def __init__(self) -> None:
        self._machine = _machine_seconds()
        self._own = _own_seconds()

    def share(self) -> float | None:
        """0.0: the run had the machine to itself; 0.5: others used half of all cores.

        Servers count as the run's own once they have been stopped (and so waited for).
        """
        now = _machine_seconds()
        if self._machine is None or now is None or now[1] <= self._machine[1]:
            return None
        busy = now[0] - self._machine[0]
        total = now[1] - self._machine[1]
        others = busy - (_own_seconds() - self._own)
        return min(1.0, max(0.0, others / total))
