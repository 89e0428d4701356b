"""inferd/heap.py: the objects alive after a load are kept out of garbage collection."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from inferd.heap import freeze_loaded_objects


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> Node:
    first, second = Node(), Node()
    first.other, second.other = second, first
    return first


@pytest.fixture
def thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the suite's objects stay collectable


@pytest.mark.usefixtures("thawed")
def test_live_objects_are_frozen_and_garbage_is_collected_first():
    kept = cycle()
    garbage = weakref.ref(cycle())  # unreachable at once: only a collection frees a cycle
    assert garbage() is not None
    frozen = freeze_loaded_objects()
    assert garbage() is None
    assert frozen == gc.get_freeze_count() > 0
    tracked = {id(obj) for generation in range(3) for obj in gc.get_objects(generation)}
    assert id(kept) not in tracked  # in the permanent generation: no collection walks it
