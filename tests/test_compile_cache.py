"""inferd/compile_cache.py: which folder torch.compile caches in under `inferd serve`."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from inferd.compile_cache import ENVIRONMENT_KEY, use_compile_cache
from inferd.config import load_config, parse_config


def test_the_configured_folder_is_made_and_named_for_inductor(tmp_path: Path) -> None:
    environ: dict[str, str] = {}
    folder = tmp_path / "cache" / "torch-compile"
    assert use_compile_cache(folder, environ) == folder
    assert folder.is_dir() and environ == {ENVIRONMENT_KEY: str(folder)}


def test_a_folder_the_environment_names_wins(tmp_path: Path) -> None:
    environ = {ENVIRONMENT_KEY: "/srv/compiled"}
    assert use_compile_cache(tmp_path / "configured", environ) == Path("/srv/compiled")
    assert environ == {ENVIRONMENT_KEY: "/srv/compiled"}
    assert not (tmp_path / "configured").exists()


def test_a_folder_that_cannot_be_made_leaves_torchs_default(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    environ: dict[str, str] = {}
    with caplog.at_level(logging.WARNING, logger="inferd.compile_cache"):
        assert use_compile_cache(blocker / "cache", environ) is None
    assert environ == {} and "cannot use" in caplog.text


def test_the_default_is_in_the_users_cache_and_a_relative_one_beside_the_config(
    tmp_path: Path,
) -> None:
    default = parse_config({}).server.compile_cache
    assert default == Path.home() / ".cache" / "inferd" / "torch-compile"
    path = tmp_path / "inferd.toml"
    path.write_text('[server]\ncompile_cache = "state/compiled"\n')
    assert load_config(path).server.compile_cache == tmp_path.resolve() / "state" / "compiled"
