"""backends/torch_malloc.py: glibc's thresholds set once, nothing tried elsewhere."""

from __future__ import annotations

import ctypes
import platform

import pytest

from inferd.backends import torch_malloc


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


def test_this_machine_takes_them_when_it_runs_glibc(fresh):
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert torch_malloc.keep_freed_memory() is True
