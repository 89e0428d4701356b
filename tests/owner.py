"""The type of the `owner` fixture (tests/conftest.py): run a call on the module's
long-lived MLX owner thread and return its result."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Owner = Callable[..., Any]
