"""docs/plugins.md: the guide's listings are the example files CI runs, word for word."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferd.plugin_hooks import HOOKS

ROOT = Path(__file__).resolve().parents[1]
LISTED = [
    "examples/request_id_plugin.py",
    "examples/inferd-guardrails/src/inferd_guardrails/banned_words.py",
    "examples/inferd-guardrails/src/inferd_guardrails/guardrail.py",
    "examples/inferd-guardrails/src/inferd_guardrails/cost.py",
    "examples/inferd-guardrails/tests/test_cost.py",
]


@pytest.mark.parametrize("path", LISTED)
def test_the_guide_shows_this_very_file(path):
    listing = (ROOT / path).read_text(encoding="utf-8")
    guide = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    assert f"```python\n{listing}```" in guide


def test_every_hook_of_the_plugin_class_is_in_the_guide():
    guide = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    for hook in ("setup", *HOOKS):
        assert f"| `{hook}(self, " in guide, hook
