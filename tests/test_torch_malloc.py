"""backends/torch_malloc.py: glibc's thresholds set once, nothing tried elsewhere."""

from __future__ import annotations

import ctypes
import platform
import subprocess
import sys

import pytest

from inferd.backends import torch_malloc

only_on_glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="not glibc"
)


class FakeLibc:
    def __init__(self, answer: int) -> None:
        self.calls: list[tuple[int, int]] = []
        self.answer = answer

    def mallopt(self, option: int, value: int) -> int:
        self.calls.append((option, value))
        return self.answer


@pytest.fixture
def fresh():
    torch_malloc.keep_freed_memory.cache_clear()
    yield
    torch_malloc.keep_freed_memory.cache_clear()


def on_glibc(monkeypatch, libc: FakeLibc) -> None:
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    monkeypatch.setattr(platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.setattr(ctypes, "CDLL", lambda name: libc)


def test_glibc_keeps_freed_memory_and_it_is_set_once(monkeypatch, fresh):
    libc = FakeLibc(answer=1)
    on_glibc(monkeypatch, libc)
    assert torch_malloc.keep_freed_memory() is True
    assert torch_malloc.keep_freed_memory() is True
    assert libc.calls == [
        (-3, torch_malloc.MMAP_THRESHOLD_BYTES),  # M_MMAP_THRESHOLD
        (-1, torch_malloc.KEEP_FREE_BYTES),  # M_TRIM_THRESHOLD
        (-8, 1),  # M_ARENA_MAX
    ]


def test_a_refusal_is_reported_not_raised(monkeypatch, fresh):
    on_glibc(monkeypatch, FakeLibc(answer=0))
    assert torch_malloc.keep_freed_memory() is False


def test_other_c_libraries_are_left_alone(monkeypatch, fresh):
    libc = FakeLibc(answer=1)
    on_glibc(monkeypatch, libc)
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))  # musl, say
    assert torch_malloc.keep_freed_memory() is False
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    assert torch_malloc.keep_freed_memory() is False
    assert libc.calls == []


@only_on_glibc
def test_this_machine_takes_them_when_it_runs_glibc(fresh):
    assert torch_malloc.keep_freed_memory() is True


# Where a thread started afterwards allocates: in the main arena's heap (the [heap]
# mapping) or in an arena of its own. In a process of its own, as glibc's settings are.
THREAD_ALLOCATION = """
import ctypes, sys, threading
from inferd.backends import torch_malloc
if sys.argv[1] == "keep":
    assert torch_malloc.keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
found = []
thread = threading.Thread(target=lambda: found.append(libc.malloc(4096)))
thread.start()
thread.join()
with open("/proc/self/maps") as maps:
    heap = next(line for line in maps if line.rstrip().endswith("[heap]"))
start, end = (int(bound, 16) for bound in heap.split()[0].split("-"))
print("main" if start <= found[0] < end else "own")
"""


def arena_of_a_new_thread(mode: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", THREAD_ALLOCATION, mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


@only_on_glibc
def test_threads_started_afterwards_allocate_in_the_main_arena():
    assert arena_of_a_new_thread("default") == "own"  # what the owner thread had before
    assert arena_of_a_new_thread("keep") == "main"
