"""inferd/compile_cache.py: which folder torch.compile caches in under `inferd serve`."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from inferd.compile_cache import ENVIRONMENT_KEY, default_compile_cache, use_compile_cache
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


def test_by_default_the_users_cache_folder_if_there_is_a_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert parse_config({}).server.compile_cache is None  # the default, chosen at use
    monkeypatch.setenv("HOME", str(tmp_path))
    environ: dict[str, str] = {}
    expected = tmp_path / ".cache" / "inferd" / "torch-compile"
    assert use_compile_cache(None, environ) == expected and expected.is_dir()

    def homeless() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", homeless)
    assert default_compile_cache() is None
    assert use_compile_cache(None, {}) is None


def test_a_relative_folder_resolves_beside_the_config(tmp_path: Path) -> None:
    path = tmp_path / "inferd.toml"
    path.write_text('[server]\ncompile_cache = "state/compiled"\n')
    assert load_config(path).server.compile_cache == tmp_path.resolve() / "state" / "compiled"
